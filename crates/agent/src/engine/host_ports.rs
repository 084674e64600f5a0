//! Dynamic host ports: the agent, not the engine, picks them.
//!
//! ECS gives a bridge-mode port mapping with `hostPort` 0 or omitted a port
//! from the ephemeral range 49153–65535. Docker left to itself picks from the
//! kernel's `ip_local_port_range` (often 32768–60999), so the agent picks
//! instead: the next port of the range, after the last one it handed out,
//! that nothing on the host is bound to. Walking on from the last pick keeps a
//! port that a stopped task just released from being handed out again at once.

use std::sync::Mutex;

use flotilla_runtime::Protocol;

pub const DYNAMIC_HOST_PORTS_FIRST: u16 = 49153;
pub const DYNAMIC_HOST_PORTS_LAST: u16 = 65535;
/// Step between the first picks of processes whose ids differ by one. Prime,
/// so no two process ids within a range's width share a start.
const PROCESS_START_STRIDE: u32 = 7919;

/// Where a process starts walking the range. Several agents may share one
/// engine (`flotilla up` beside a `flotilla agent`, a multi-host test on one
/// machine): a port is checked free when picked but bound only when the
/// container starts, so two agents walking from the same first port would
/// hand out the same ports and all but one container would fail to start.
/// Starting each process elsewhere keeps their walks apart.
pub fn start_for_process(process_id: u32) -> u16 {
    let span = u32::from(DYNAMIC_HOST_PORTS_LAST - DYNAMIC_HOST_PORTS_FIRST) + 1;
    let offset = process_id.wrapping_mul(PROCESS_START_STRIDE) % span;
    DYNAMIC_HOST_PORTS_FIRST + u16::try_from(offset).unwrap_or(0)
}

/// Whether a port is free on this host. The real one binds it for a moment;
/// tests pass their own.
pub type PortIsFree = dyn Fn(u16, Protocol) -> bool + Send + Sync;

pub struct HostPortPicker {
    next: Mutex<u16>,
    is_free: Box<PortIsFree>,
}

impl HostPortPicker {
    /// Picks ports that binding on all addresses shows to be free, starting
    /// at this process's own place in the range (see [`start_for_process`]).
    pub fn new() -> Self {
        Self {
            next: Mutex::new(start_for_process(std::process::id())),
            is_free: Box::new(|port, protocol| match protocol {
                Protocol::Tcp => std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
                Protocol::Udp => std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok(),
            }),
        }
    }

    pub fn with_check(is_free: Box<PortIsFree>) -> Self {
        Self {
            next: Mutex::new(DYNAMIC_HOST_PORTS_FIRST),
            is_free,
        }
    }

    /// The next free port of the range, or `None` when all are taken.
    pub fn pick(&self, protocol: Protocol) -> Option<u16> {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let span = u32::from(DYNAMIC_HOST_PORTS_LAST - DYNAMIC_HOST_PORTS_FIRST) + 1;
        for _ in 0..span {
            let port = *next;
            *next = if port == DYNAMIC_HOST_PORTS_LAST {
                DYNAMIC_HOST_PORTS_FIRST
            } else {
                port + 1
            };
            if (self.is_free)(port, protocol) {
                return Some(port);
            }
        }
        None
    }
}

impl std::fmt::Debug for HostPortPicker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HostPortPicker")
            .finish_non_exhaustive()
    }
}

impl Default for HostPortPicker {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_the_range_skipping_taken_ports_and_wraps() {
        let picker = HostPortPicker::with_check(Box::new(|port, _| port != 49154));
        assert_eq!(picker.pick(Protocol::Tcp), Some(49153));
        assert_eq!(picker.pick(Protocol::Tcp), Some(49155));
        *picker.next.lock().expect("lock") = DYNAMIC_HOST_PORTS_LAST;
        assert_eq!(picker.pick(Protocol::Udp), Some(65535));
        assert_eq!(picker.pick(Protocol::Udp), Some(49153));
    }

    #[test]
    fn none_when_every_port_is_taken() {
        let picker = HostPortPicker::with_check(Box::new(|_, _| false));
        assert_eq!(picker.pick(Protocol::Tcp), None);
    }

    #[test]
    fn processes_start_apart_and_in_the_range() {
        let starts: Vec<u16> = (1..=1000).map(start_for_process).collect();
        assert!(starts
            .iter()
            .all(|port| (DYNAMIC_HOST_PORTS_FIRST..=DYNAMIC_HOST_PORTS_LAST).contains(port)));
        for pair in starts.windows(2) {
            assert!(pair[0].abs_diff(pair[1]) > 64, "{pair:?}");
        }
        assert_eq!(start_for_process(u32::MAX), start_for_process(u32::MAX));
    }

    #[test]
    fn real_picks_are_in_the_ecs_range() {
        let port = HostPortPicker::new()
            .pick(Protocol::Tcp)
            .expect("a free port");
        assert!((DYNAMIC_HOST_PORTS_FIRST..=DYNAMIC_HOST_PORTS_LAST).contains(&port));
    }
}
