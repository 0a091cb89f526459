//! Conversions from unit-parser's typed views: the `[X-Fleet]` requirements and the
//! `[Service]` resource settings become a [`UnitSpec`].

use unit_parser::UnitFile;
use unit_parser::service::Service;
use unit_parser::value::{
    CpuWeight, MemoryLimit, parse_cpu_quota, parse_cpu_weight, parse_memory_limit,
};
use unit_parser::xfleet::XFleet;

use crate::cluster::{Resources, UnitSpec};

/// The value systemd ends up with for a `[Service]` setting: the last valid assignment
/// (invalid ones are ignored with a warning, an empty one resets to the default).
fn setting<T>(unit: &UnitFile, key: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    let mut out = None;
    for v in unit.get_list("Service", key) {
        if v.is_empty() {
            out = None;
        } else if let Some(x) = parse(v) {
            out = Some(x);
        }
    }
    out
}

impl Resources {
    /// The demand a `[Service]` section declares: `MemoryMax=` (else `MemoryHigh=`) in
    /// bytes, `CPUQuota=` rounded up to whole percent, `CPUWeight=`.
    ///
    /// `infinity` and percentages of physical memory (which depend on the machine) count
    /// as no memory demand; `CPUWeight=idle` as no weight.
    pub fn from_service(service: &Service) -> Resources {
        let bytes = |m: &Option<MemoryLimit>| match m {
            Some(MemoryLimit::Bytes(b)) => Some(*b),
            _ => None,
        };
        Resources {
            memory_bytes: bytes(&service.memory_max)
                .or(bytes(&service.memory_high))
                .unwrap_or(0),
            cpu_percent: service.cpu_quota.map_or(0, |q| q.max(0.0).ceil() as u64),
            cpu_weight: match service.cpu_weight {
                Some(CpuWeight::Weight(w)) => w,
                _ => 0,
            },
        }
    }
}

impl UnitSpec {
    /// A launched unit with the requirements of an `[X-Fleet]` view (specifiers resolved
    /// for `name` by the caller) and no resource demand.
    pub fn from_xfleet(name: impl Into<String>, xfleet: &XFleet) -> UnitSpec {
        UnitSpec {
            name: name.into(),
            machine_id: xfleet.machine_id.clone(),
            machine_of: xfleet.machine_of.clone(),
            machine_metadata: xfleet.machine_metadata.clone(),
            conflicts: xfleet.conflicts.clone(),
            global: xfleet.global,
            replaces: xfleet.replaces.clone(),
            ..UnitSpec::default()
        }
    }

    /// A launched unit from a parsed unit file: its `[X-Fleet]` section with specifiers
    /// resolved for `name`, and the resource settings of its `[Service]` section.
    ///
    /// Fleet validates `[X-Fleet]` only when a unit is submitted, so this does not: units
    /// already in a cluster are scheduled as they are. Only the resource settings of
    /// `[Service]` are read, so a service systemd would refuse to start (no `ExecStart=`)
    /// is still placed, as fleet places it.
    pub fn from_unit_file(name: &str, unit: &UnitFile) -> UnitSpec {
        let xfleet = XFleet::parse(unit, Some(name)).xfleet;
        let service = Service {
            memory_max: setting(unit, "MemoryMax", |v| parse_memory_limit(v).ok()),
            memory_high: setting(unit, "MemoryHigh", |v| parse_memory_limit(v).ok()),
            cpu_quota: setting(unit, "CPUQuota", |v| parse_cpu_quota(v).ok()),
            cpu_weight: setting(unit, "CPUWeight", |v| parse_cpu_weight(v).ok()),
            ..Service::default()
        };
        let mut spec = UnitSpec::from_xfleet(name, &xfleet);
        spec.demand = Resources::from_service(&service);
        spec
    }
}

#[cfg(test)]
mod tests {
    use crate::{Resources, UnitSpec};

    #[test]
    fn unit_file_to_spec() {
        let text = "[Service]\nExecStart=/bin/true\nMemoryMax=512M\nCPUQuota=150%\nCPUWeight=200\n\
                    [X-Fleet]\nMachineMetadata=\"region=eu\" \"disk=ssd\"\nConflicts=%p@*.service\n\
                    MachineOf=db.service\n";
        let unit = unit_parser::parse(text).unwrap();
        let spec = UnitSpec::from_unit_file("web@1.service", &unit);
        assert_eq!(spec.conflicts, vec!["web@*.service".to_owned()]);
        assert_eq!(spec.machine_of, vec!["db.service".to_owned()]);
        assert_eq!(
            spec.machine_metadata,
            vec![
                ("region".to_owned(), "eu".to_owned()),
                ("disk".to_owned(), "ssd".to_owned())
            ]
        );
        assert_eq!(
            spec.demand,
            Resources {
                memory_bytes: 512 << 20,
                cpu_percent: 150,
                cpu_weight: 200
            }
        );
    }

    #[test]
    fn memory_high_is_the_fallback_and_invalid_or_reset_values_are_ignored() {
        let unit =
            unit_parser::parse("[Service]\nMemoryHigh=1G\n[X-Fleet]\nGlobal=true\n").unwrap();
        let spec = UnitSpec::from_unit_file("g.service", &unit);
        assert!(spec.global);
        assert_eq!(spec.demand.memory_bytes, 1 << 30);
        let unit = unit_parser::parse(
            "[Service]\nMemoryMax=bogus\nMemoryHigh=1G\nCPUQuota=1%\nCPUQuota=\n",
        )
        .unwrap();
        let demand = UnitSpec::from_unit_file("a.service", &unit).demand;
        assert_eq!(demand.memory_bytes, 1 << 30);
        assert_eq!(demand.cpu_percent, 0);
    }
}
