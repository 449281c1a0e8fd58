//! The state of the network interface that carries the hub's address (the
//! seed's "network interface status"), for the network checker.
//!
//! [`interface_for`] asks the kernel (`getifaddrs`) which interface holds an
//! address and what its flags say: `up` (administratively up and running),
//! `no_carrier` (up, but the link is not running: a cable or a Wi-Fi
//! association is gone), `down` (administratively down) or `missing` (no
//! interface holds the address any more: it was removed or moved). A
//! wildcard bind (`0.0.0.0`, `::`) is served by every interface, so it is
//! `up` while any interface is up.
//!
//! Not here: judging (the checker maps a state to a health status) or any
//! caching: one `getifaddrs` call is a netlink round trip of a few tens of
//! microseconds, paid once per check cycle on the blocking pool.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the kernel says of the interface behind an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceState {
    /// Up and running.
    Up { name: String },
    /// Administratively up, but the link is not running.
    NoCarrier { name: String },
    /// Administratively down.
    Down { name: String },
    /// No interface holds the address.
    Missing,
}

impl InterfaceState {
    /// The word `/health` and `/diagnostics` print.
    pub fn as_str(&self) -> &'static str {
        match self {
            InterfaceState::Up { .. } => "up",
            InterfaceState::NoCarrier { .. } => "no_carrier",
            InterfaceState::Down { .. } => "down",
            InterfaceState::Missing => "missing",
        }
    }

    /// The interface's name (`*` for a wildcard bind), if one holds the address.
    pub fn name(&self) -> Option<&str> {
        match self {
            InterfaceState::Up { name }
            | InterfaceState::NoCarrier { name }
            | InterfaceState::Down { name } => Some(name),
            InterfaceState::Missing => None,
        }
    }
}

/// One interface address as `getifaddrs` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub name: String,
    pub ip: Option<IpAddr>,
    /// `IFF_*` flags.
    pub flags: u32,
}

/// The state of the interface holding `ip`; `Err` when the kernel cannot be asked.
pub fn interface_for(ip: IpAddr) -> std::io::Result<InterfaceState> {
    Ok(state_for(ip, &interface_addrs()?))
}

/// The rule of the module doc over a list of interface addresses (pure, so
/// the tests can give it any list).
pub fn state_for(ip: IpAddr, addrs: &[InterfaceAddr]) -> InterfaceState {
    let state = |a: &InterfaceAddr, name: String| {
        let up = a.flags & libc::IFF_UP as u32 != 0;
        let running = a.flags & libc::IFF_RUNNING as u32 != 0;
        match (up, running) {
            (true, true) => InterfaceState::Up { name },
            (true, false) => InterfaceState::NoCarrier { name },
            (false, _) => InterfaceState::Down { name },
        }
    };
    if ip.is_unspecified() {
        let wildcard = || "*".to_string();
        return match addrs.iter().find(|a| a.flags & libc::IFF_UP as u32 != 0) {
            Some(a) => state(a, wildcard()),
            None => InterfaceState::Down { name: wildcard() },
        };
    }
    let wanted = canonical(ip);
    addrs
        .iter()
        .find(|a| a.ip.map(canonical) == Some(wanted))
        .map_or(InterfaceState::Missing, |a| state(a, a.name.clone()))
}

/// An IPv4-mapped IPv6 address compares as the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every interface address the kernel lists.
pub fn interface_addrs() -> std::io::Result<Vec<InterfaceAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        let name = if entry.ifa_name.is_null() {
            String::new()
        } else {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            unsafe { CStr::from_ptr(entry.ifa_name) }
                .to_string_lossy()
                .into_owned()
        };
        out.push(InterfaceAddr {
            name,
            // SAFETY: ifa_addr is null or points to a sockaddr owned by the list.
            ip: unsafe { ip_of(entry.ifa_addr) },
            flags: entry.ifa_flags,
        });
        cursor = entry.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The IP of an interface address (`None` for link-layer and other families).
///
/// # Safety
/// `addr` is null or points to a valid `sockaddr` of the family it names.
unsafe fn ip_of(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a valid sockaddr; its family says which
    // larger struct it is the prefix of.
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET => {
                let v4 = &*(addr.cast::<libc::sockaddr_in>());
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*(addr.cast::<libc::sockaddr_in6>());
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: u32 = (libc::IFF_UP | libc::IFF_RUNNING) as u32;
    const NO_CARRIER: u32 = libc::IFF_UP as u32;

    fn addr(name: &str, ip: &str, flags: u32) -> InterfaceAddr {
        InterfaceAddr {
            name: name.into(),
            ip: Some(ip.parse().expect("ip")),
            flags,
        }
    }

    #[test]
    fn the_interface_holding_the_address_decides() {
        let list = [
            addr("lo", "127.0.0.1", UP),
            addr("eth0", "10.1.2.3", NO_CARRIER),
            addr("wlan0", "192.168.1.5", 0),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            state_for(ip("127.0.0.1"), &list),
            InterfaceState::Up { name: "lo".into() }
        );
        assert_eq!(state_for(ip("10.1.2.3"), &list).as_str(), "no_carrier");
        assert_eq!(state_for(ip("192.168.1.5"), &list).as_str(), "down");
        assert_eq!(state_for(ip("10.9.9.9"), &list), InterfaceState::Missing);
        assert_eq!(
            state_for(ip("::ffff:127.0.0.1"), &list).name(),
            Some("lo"),
            "a v4-mapped address is its v4 address"
        );
    }

    #[test]
    fn a_wildcard_is_up_while_any_interface_is() {
        let any: IpAddr = "0.0.0.0".parse().expect("ip");
        assert_eq!(
            state_for(
                any,
                &[addr("eth0", "10.1.2.3", 0), addr("lo", "127.0.0.1", UP)]
            ),
            InterfaceState::Up { name: "*".into() }
        );
        assert_eq!(
            state_for(any, &[addr("eth0", "10.1.2.3", 0)]).as_str(),
            "down"
        );
    }

    #[test]
    fn this_machines_loopback_is_found_and_up() {
        let state = interface_for("127.0.0.1".parse().expect("ip")).expect("getifaddrs");
        assert_eq!(state.as_str(), "up", "{state:?}");
        assert!(state.name().is_some());
    }
}
