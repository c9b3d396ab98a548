//! The connections `serve` holds: at most `--max-connections` in all and
//! `--max-connections-per-client` per client address (an IPv6 client is
//! its /64), so no client and no crowd of idle sockets can keep others
//! out. Past either limit, the connection idle the longest (of that
//! client, or of all) is closed to make room; only when every one is busy
//! sending is the new connection refused, with 503 and `Retry-After`.
//!
//! A connection is *busy* while a request is answered (from its head to
//! the end of its body) and *idle* otherwise: before its first byte, or
//! between keep-alive requests.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// File descriptors kept beside two per connection (its socket, and the
/// segment file a transfer reads): listeners, media files held open by
/// kept generations, the cache.
const FD_RESERVE: u64 = 512;

/// All connections.
pub(super) struct Conns {
    table: Mutex<Table>,
    max: usize,
    per_client: usize,
    epoch: Instant,
}

#[derive(Default)]
struct Table {
    next: u64,
    all: HashMap<u64, Arc<Conn>>,
    per_client: HashMap<IpAddr, usize>,
}

/// One connection.
pub(super) struct Conn {
    id: u64,
    client: IpAddr,
    /// Requests being answered (0 or 1: HTTP/1.1 without pipelining).
    busy: AtomicU32,
    /// When it last became idle, or last wrote a byte (ms since `epoch`).
    idle_since: AtomicU64,
    last_write: AtomicU64,
    epoch: Instant,
    /// Told to close (evicted to make room for a new connection).
    pub(super) close: tokio::sync::Notify,
}

/// The key connections are counted by: the address, IPv4-mapped IPv6 as
/// IPv4, other IPv6 by its /64 (one host can use a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Conns {
    pub(super) fn new(max: usize, per_client: usize) -> Conns {
        Conns {
            table: Mutex::new(Table::default()),
            max: max.max(1),
            per_client: per_client.max(1),
            epoch: Instant::now(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Only counters and maps, always consistent between statements.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Room for a connection from `ip`: closes the longest idle connection
    /// of that client (at its limit) or of all (at the global limit), or
    /// `None` when every one that would have to go is busy.
    pub(super) fn admit(&self, ip: IpAddr) -> Option<Arc<Conn>> {
        let client = client_key(ip);
        let mut t = self.table();
        if t.per_client.get(&client).copied().unwrap_or(0) >= self.per_client {
            let victim = t.longest_idle(|c| c.client == client)?;
            t.evict(victim);
        }
        if t.all.len() >= self.max {
            let victim = t.longest_idle(|_| true)?;
            t.evict(victim);
        }
        t.next += 1;
        let now = self.now_ms();
        let c = Arc::new(Conn {
            id: t.next,
            client,
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            last_write: AtomicU64::new(now),
            epoch: self.epoch,
            close: tokio::sync::Notify::new(),
        });
        t.all.insert(c.id, c.clone());
        *t.per_client.entry(client).or_default() += 1;
        Some(c)
    }

    /// Forgets a connection that ended (if it was not evicted already).
    pub(super) fn remove(&self, c: &Conn) {
        let mut t = self.table();
        if t.all.remove(&c.id).is_some() {
            t.uncount(c.client);
        }
    }

    /// Closes the connection idle the longest, if any (out of file
    /// descriptors: the next accept needs one).
    pub(super) fn shed_one(&self) {
        let mut t = self.table();
        if let Some(v) = t.longest_idle(|_| true) {
            t.evict(v);
        }
    }

    /// Connections held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().all.len()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Table {
    fn longest_idle(&self, of: impl Fn(&Conn) -> bool) -> Option<u64> {
        self.all
            .values()
            .filter(|c| of(c) && c.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|c| (c.idle_since.load(Ordering::Relaxed), c.id))
            .map(|c| c.id)
    }

    fn evict(&mut self, id: u64) {
        if let Some(c) = self.all.remove(&id) {
            self.uncount(c.client);
            c.close.notify_one();
        }
    }

    fn uncount(&mut self, client: IpAddr) {
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

impl Conn {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request is being answered until the guard drops (with the
    /// response's body, or with the request if it is abandoned).
    pub(super) fn begin(self: &Arc<Conn>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.last_write.store(self.now_ms(), Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Nothing is being answered.
    pub(super) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// Bytes went out.
    pub(super) fn wrote(&self) {
        self.last_write.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Nothing written for `idle` since the last request began: the client
    /// takes no data (also while the end of a response is flushed, which
    /// counts as idle; a keep-alive connection waiting for a request head
    /// is closed by the head timeout long before).
    pub(super) fn stalled(&self, idle: Duration) -> bool {
        let quiet = self
            .now_ms()
            .saturating_sub(self.last_write.load(Ordering::Relaxed));
        u128::from(quiet) > idle.as_millis()
    }
}

/// A request being answered; see [`Conn::begin`].
pub(super) struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since.store(c.now_ms(), Ordering::Relaxed);
        c.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Raises the soft limit on open files to what `max` connections need
/// (two descriptors each, and [`FD_RESERVE`]), as far as the hard limit
/// allows; returns the connections that fit.
pub(super) fn fit_open_files(max: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let need = (max as u64).saturating_mul(2).saturating_add(FD_RESERVE);
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    let soft = lim.current.unwrap_or(u64::MAX);
    let mut have = soft;
    if soft < need {
        let want = need.min(hard);
        if setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: lim.maximum,
            },
        )
        .is_ok()
        {
            have = want;
        }
    }
    let fit = have.saturating_sub(FD_RESERVE) / 2;
    max.min(usize::try_from(fit).unwrap_or(usize::MAX)).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_idle_makes_room() {
        let conns = Conns::new(4, 2);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        let a1 = conns.admit(a).unwrap();
        let a1_busy = a1.begin();
        let a2 = conns.admit(a).unwrap();
        // a's third: a2 (idle) goes, a1 (busy) stays.
        let a3 = conns.admit(a).unwrap();
        assert_eq!(conns.len(), 2);
        let a3_busy = a3.begin();
        // Both of a's busy: a's next is refused.
        assert!(conns.admit(a).is_none());
        let b1 = conns.admit(b).unwrap();
        let _b2 = conns.admit(b).unwrap();
        assert_eq!(conns.len(), 4);
        // At the global limit another client evicts the longest idle.
        let _c1 = conns.admit(c).unwrap();
        assert_eq!(conns.len(), 4);
        assert!(!conns.table().all.contains_key(&b1.id));
        drop(a1_busy);
        assert!(conns.admit(a).is_some());
        assert!(!conns.table().all.contains_key(&a1.id));
        conns.remove(&a2);
        drop(a3_busy);
        assert_eq!(conns.len(), 4);
        let v6 = |s: &str| client_key(ip(s));
        assert_eq!(v6("2001:db8::1"), v6("2001:db8::2:3"));
        assert_ne!(v6("2001:db8::1"), v6("2001:db9::1"));
        assert_eq!(v6("::ffff:10.0.0.1"), a);
    }
}
