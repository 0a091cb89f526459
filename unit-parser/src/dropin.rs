//! Drop-in directories (`NAME.d/*.conf`), merged in systemd's order.
