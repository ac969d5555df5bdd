//! Ban feeds the daemon runs beside the kernel. Each applies the bans of one origin (through
//! `Control::update_origin`, kept apart from every other origin's) and may hear this node's own
//! kernel bans, to share them. Manual bans and fail2ban's come through the CLI instead
//! (`sip-xdp ban add --origin ...`); CrowdSec's through its client (`crowdsec::Crowdsec`). The
//! next feed is one more implementation of [`BanFeed`], held in the same [`Feeds`].
use std::{future::Future, pin::Pin};

use crate::{events::BanRecord, state::BanOrigin};

/// What [`BanFeed::stop`] returns: the feed's tasks winding down.
pub type Stopping = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One feed of bans of its own origin.
pub trait BanFeed: Send {
    /// The origin its bans carry.
    fn origin(&self) -> BanOrigin;
    /// One of this node's own ban events, as the kernel reported it (for feeds that share
    /// them, such as CrowdSec's signals). Must not block: it runs on the event reader.
    fn on_own_ban(&self, _record: &BanRecord) {}
    /// The per-source IPv6 prefix changed (a reload): own bans are keyed by it.
    fn set_ipv6_prefix(&self, _prefix: u8) {}
    /// Stops its tasks; the bans it applied stay in force and run out on their own.
    fn stop(self: Box<Self>) -> Stopping;
}

/// The feeds a daemon runs: at most one per origin.
#[derive(Default)]
pub struct Feeds {
    running: Vec<Box<dyn BanFeed>>,
}

impl Feeds {
    pub fn is_running(&self, origin: BanOrigin) -> bool {
        self.running.iter().any(|feed| feed.origin() == origin)
    }

    /// Starts holding `feed`; returns the feed of the same origin it replaces, to be stopped.
    pub fn insert(&mut self, feed: Box<dyn BanFeed>) -> Option<Box<dyn BanFeed>> {
        let replaced = self.take(feed.origin());
        self.running.push(feed);
        replaced
    }

    /// Stops holding the feed of `origin`, if one runs.
    pub fn take(&mut self, origin: BanOrigin) -> Option<Box<dyn BanFeed>> {
        let at = self
            .running
            .iter()
            .position(|feed| feed.origin() == origin)?;
        Some(self.running.swap_remove(at))
    }

    pub fn take_all(&mut self) -> Vec<Box<dyn BanFeed>> {
        std::mem::take(&mut self.running)
    }

    pub fn on_own_ban(&self, record: &BanRecord) {
        for feed in &self.running {
            feed.on_own_ban(record);
        }
    }

    pub fn set_ipv6_prefix(&self, prefix: u8) {
        for feed in &self.running {
            feed.set_ipv6_prefix(prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    struct Counting {
        origin: BanOrigin,
        prefix_sets: Arc<AtomicUsize>,
    }

    impl BanFeed for Counting {
        fn origin(&self) -> BanOrigin {
            self.origin
        }
        fn set_ipv6_prefix(&self, _prefix: u8) {
            self.prefix_sets.fetch_add(1, Ordering::Relaxed);
        }
        fn stop(self: Box<Self>) -> Stopping {
            Box::pin(async {})
        }
    }

    #[test]
    fn one_feed_per_origin() {
        let sets = Arc::new(AtomicUsize::new(0));
        let feed = |origin| {
            Box::new(Counting {
                origin,
                prefix_sets: sets.clone(),
            }) as Box<dyn BanFeed>
        };
        let mut feeds = Feeds::default();
        assert!(feeds.insert(feed(BanOrigin::Crowdsec)).is_none());
        assert!(feeds.insert(feed(BanOrigin::Fail2ban)).is_none());
        // A second feed of an origin replaces the first, which the caller then stops.
        assert!(feeds.insert(feed(BanOrigin::Crowdsec)).is_some());
        feeds.set_ipv6_prefix(64);
        assert_eq!(sets.load(Ordering::Relaxed), 2);
        assert!(feeds.is_running(BanOrigin::Crowdsec));
        assert!(feeds.take(BanOrigin::Crowdsec).is_some());
        assert!(!feeds.is_running(BanOrigin::Crowdsec));
        assert_eq!(feeds.take_all().len(), 1);
    }
}
