//! Free loopback port ranges for local clusters (`reckon init --base-port`): the demo, the e2e
//! bench and the integration tests. A range is probed by binding and then released, so another
//! process can still take a port before the node binds it; searching only below the kernel's
//! ephemeral range (`ip_local_port_range`) keeps outgoing connections, which take their source
//! ports from that range, out of the way.

use std::net::TcpListener;

/// Lowest base port searched.
const PORT_SEARCH_LOW: usize = 10_000;
/// Where the ephemeral range starts when `/proc` does not say (the Linux default).
const EPHEMERAL_LOW_DEFAULT: usize = 32_768;
/// Ranges tried before giving up.
pub const PORT_PROBES_MAX: usize = 64;

fn ephemeral_low() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_LOW_DEFAULT)
}

/// A base port P with P+i, P+100+i and P+200+i free on 127.0.0.1 for i < n (the layout `reckon
/// init` uses: peer, client and metrics ports), below the ephemeral range. `seed` spreads callers
/// that search at the same moment (process id, clock, a per-process counter).
pub fn free_base_port(n: usize, seed: usize) -> Option<u16> {
    let high = ephemeral_low().saturating_sub(200 + n);
    let span = high.checked_sub(PORT_SEARCH_LOW).filter(|s| *s > 0)?;
    (0..PORT_PROBES_MAX)
        .map(|attempt| {
            PORT_SEARCH_LOW + (seed.wrapping_mul(7919).wrapping_add(attempt * 977) % span)
        })
        .find(|base| {
            (0..n).all(|i| {
                [base + i, base + 100 + i, base + 200 + i]
                    .iter()
                    .all(|p| TcpListener::bind(("127.0.0.1", *p as u16)).is_ok())
            })
        })
        .map(|base| base as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_found_range_is_free_and_below_the_ephemeral_range() {
        let base = free_base_port(4, std::process::id() as usize).expect("a free range") as usize;
        assert!(base >= PORT_SEARCH_LOW);
        assert!(base + 203 < ephemeral_low(), "{base}");
        // Hold one of its ports: the same seed must now find another range.
        let _held = TcpListener::bind(("127.0.0.1", base as u16)).expect("still free");
        let other = free_base_port(4, std::process::id() as usize).expect("another range");
        assert_ne!(other as usize, base);
    }
}
