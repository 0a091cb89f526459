//! Integration tests (one binary, as the workspace's style asks).

// Helpers: deadlines, scratch directories.
mod util;
// The behavioural suite, generic over UnitDriver.
mod suite;
// The suite and supervisor-specific cases against ProcessDriver.
mod process;
// SystemdDriver against a real systemd --user.
mod systemd;
// SystemdDriver against systemd as PID 1 in a container (the system manager).
mod systemd_system;
