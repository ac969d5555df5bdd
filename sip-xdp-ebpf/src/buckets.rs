//! Token buckets (GCRA): which bucket a class draws from, and whether one more packet fits.
use sip_xdp_common::{LimitClass, MethodClass, RateLimit, SourceState};

/// Which bucket a class draws from: every SIP class has one, so no packet shape reaches the
/// server at line rate (a bucket whose rate is "unlimited" lets its class through). TCP
/// segments other than SYNs and requests have none: they belong to connections already made.
#[inline(always)]
pub const fn limit_class(class: MethodClass) -> Option<LimitClass> {
    match class {
        MethodClass::Register => Some(LimitClass::Register),
        MethodClass::Invite => Some(LimitClass::Invite),
        MethodClass::Options => Some(LimitClass::Options),
        MethodClass::Subscribe
        | MethodClass::Notify
        | MethodClass::Message
        | MethodClass::Prack
        | MethodClass::Update
        | MethodClass::Info
        | MethodClass::Refer
        | MethodClass::Publish => Some(LimitClass::Other),
        MethodClass::Ack | MethodClass::Bye | MethodClass::Cancel => Some(LimitClass::InDialog),
        MethodClass::Response => Some(LimitClass::Response),
        MethodClass::KeepAlive => Some(LimitClass::KeepAlive),
        MethodClass::Malformed => Some(LimitClass::Malformed),
        MethodClass::TcpSyn => Some(LimitClass::Connection),
        MethodClass::Fragment
        | MethodClass::NotSip
        | MethodClass::Unparsed
        | MethodClass::Tcp
        | MethodClass::Unread => None,
    }
}

/// [`limit_index`] of a class without a bucket.
pub const NO_LIMIT: usize = 0xff;

/// [`limit_class`] by index, 4 bits per class in two words: no branch per class, so the
/// verifier walks the policy once for all classes rather than once for each.
const LIMIT_NIBBLES: [u64; 2] = {
    let mut words = [u64::MAX; 2];
    let mut i = 0;
    while i < MethodClass::COUNT {
        let nibble = match limit_class(MethodClass::ALL[i]) {
            Some(limit) => limit as u64,
            None => 15,
        };
        words[i / 16] &= !(15 << ((i % 16) * 4));
        words[i / 16] |= nibble << ((i % 16) * 4);
        i += 1;
    }
    words
};
const _: () = assert!(MethodClass::COUNT <= 32 && LimitClass::COUNT < 15);

/// The [`LimitClass`] index of a [`MethodClass`] index, or [`NO_LIMIT`].
#[inline(always)]
pub fn limit_index(class: usize) -> usize {
    let word = if class < 16 {
        LIMIT_NIBBLES[0]
    } else {
        LIMIT_NIBBLES[1]
    };
    let nibble = ((word >> ((class & 15) * 4)) & 15) as usize;
    if class < MethodClass::COUNT && nibble < LimitClass::COUNT {
        nibble
    } else {
        NO_LIMIT
    }
}

/// The bucket a banned source's (or prefix's) packets draw from while it is banned: the one
/// that ran dry for the ban, or REGISTER's for a ban of another cause (failed authentication).
/// Its packets are not classified (the ban is decided before the payload is read), so they all
/// meet the bucket that banned it.
#[inline(always)]
pub fn extension_limit(ban_class: u8) -> usize {
    if (ban_class as usize) < LimitClass::COUNT {
        ban_class as usize
    } else {
        LimitClass::Register as usize
    }
}

// Constant indices only: an index the optimizer cannot bound becomes a panic branch, and the
// verifier rejects the program for it.
#[inline(always)]
pub fn bucket(limits: &[RateLimit; LimitClass::COUNT], limit: LimitClass) -> &RateLimit {
    match limit {
        LimitClass::Register => &limits[0],
        LimitClass::Invite => &limits[1],
        LimitClass::Options => &limits[2],
        LimitClass::Other => &limits[3],
        LimitClass::InDialog => &limits[4],
        LimitClass::Response => &limits[5],
        LimitClass::KeepAlive => &limits[6],
        LimitClass::Malformed => &limits[7],
        LimitClass::Connection => &limits[8],
    }
}

#[inline(always)]
pub fn tat_mut(state: &mut SourceState, limit: LimitClass) -> &mut u64 {
    match limit {
        LimitClass::Register => &mut state.tat_ns[0],
        LimitClass::Invite => &mut state.tat_ns[1],
        LimitClass::Options => &mut state.tat_ns[2],
        LimitClass::Other => &mut state.tat_ns[3],
        LimitClass::InDialog => &mut state.tat_ns[4],
        LimitClass::Response => &mut state.tat_ns[5],
        LimitClass::KeepAlive => &mut state.tat_ns[6],
        LimitClass::Malformed => &mut state.tat_ns[7],
        LimitClass::Connection => &mut state.tat_ns[8],
    }
}

/// GCRA: does one more packet fit the bucket? Updates the bucket when it does.
#[inline(always)]
pub fn conforms(tat_ns: &mut u64, limit: &RateLimit, now_ns: u64) -> bool {
    let tat = if *tat_ns > now_ns { *tat_ns } else { now_ns };
    if tat - now_ns > limit.burst_tolerance_ns {
        return false;
    }
    *tat_ns = tat + limit.interval_ns;
    true
}

/// One more packet of the class `limit` indexes fits, or the class is not limited. Indexed, not
/// matched: one walk of the verifier serves every class.
#[inline(always)]
pub fn draw(
    state: &mut SourceState,
    limits: &[RateLimit; LimitClass::COUNT],
    limit: usize,
    now_ns: u64,
) -> bool {
    let (Some(bucket), Some(tat_ns)) = (limits.get(limit), state.tat_ns.get_mut(limit)) else {
        return true;
    };
    bucket.is_unlimited() || conforms(tat_ns, bucket, now_ns)
}
