//! The dns monitor's maps: the ports that mark DNS traffic, filled after load. Its programs and
//! their paths are the catalog's (`tapio_catalog::dns`, re-exported here).

use aya::{maps::MapError, Ebpf};

pub use tapio_catalog::dns::{MESSAGES, SPEC};

/// The map of ports that mark DNS traffic (probes/include/dns_ports.bpf.h). The dns object and
/// the network object (its `udp_flow` events) each have one; [`set_ports`] fills both from the
/// one `dns_ports` setting, so the two monitors always agree on what DNS traffic is.
pub const DNS_PORTS_MAP: &str = "dns_ports";
/// The port written to `dns_ports[0]` at load.
pub const DEFAULT_DNS_PORT: u16 = 53;
/// Slots of the map (`DNS_PORTS_MAX` in probes/include/dns_ports.bpf.h); 0 marks an unused one.
pub const DNS_PORTS_MAX: u32 = 4;

/// Writes `ports` into `ebpf`'s [`DNS_PORTS_MAP`], the slots past them 0 (unused), if the object
/// has that map. Returns whether it had. At most [`DNS_PORTS_MAX`] ports are taken (the
/// configuration refuses more).
pub fn set_ports(ebpf: &mut Ebpf, ports: &[u16]) -> Result<bool, MapError> {
    let Some(map) = ebpf.map_mut(DNS_PORTS_MAP) else { return Ok(false) };
    let mut array = aya::maps::Array::<_, u32>::try_from(map)?;
    for slot in 0..DNS_PORTS_MAX {
        let port = ports.get(slot as usize).copied().unwrap_or(0);
        array.set(slot, u32::from(port), 0)?;
    }
    Ok(true)
}
