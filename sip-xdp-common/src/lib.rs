//! Types shared by the XDP program (`sip-xdp-ebpf`) and user space (`sip-xdp`).
//!
//! Everything here is `#[repr(C)]` with explicit padding, because the kernel and user space
//! exchange these structs as raw map keys and values: a layout difference is silent corruption.
//! With the `user` feature, each type also implements `aya::Pod`.
#![no_std]

mod answers;
mod classes;
mod config;
mod counters;
mod events;
mod fragments;
mod lists;
mod maps;
mod parser;
#[cfg(feature = "user")]
mod pod;
mod signatures;
mod sources;

pub use answers::*;
pub use classes::*;
pub use config::*;
pub use counters::*;
pub use events::*;
pub use fragments::*;
pub use lists::*;
pub use maps::*;
pub use parser::*;
pub use signatures::*;
pub use sources::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(
            size_of::<Config>(),
            4 + 4
                + 16
                + 4
                + 4
                + 16
                + 16 * LimitClass::COUNT
                + 8 * 4
                + 16 * LimitClass::COUNT
                + 16 * 3
                + 8 * 2
                + 4 * 4
                + 8
                + 2 * MAX_SIP_PORTS
                + PREFIX_LEVELS
                + 5
                + 16 * PREFIX_LEVELS
                + 16 * LimitClass::COUNT
                + 8
                + 8
        );
        assert_eq!(
            size_of::<SourceState>(),
            8 * LimitClass::COUNT + 8 * 5 + 4 + 4 + 1 + 1 + 6 + 8 * 2
        );
        assert_eq!(size_of::<DurableBan>(), 8 + 8 + 4 + 1 + 1 + 2);
        assert_eq!(
            size_of::<BanEvent>(),
            16 + 8 * 4 + 4 + 4 + 1 + 1 + 2 + 1 + 3
        );
        assert_eq!(size_of::<PrefixKey>(), 24);
        assert_eq!(size_of::<FragmentKey>(), 24);
        assert_eq!(size_of::<VerifiedSource>(), 24);
        assert_eq!(size_of::<AnswerState>(), 8 * 2 + 4 * 4);
        assert_eq!(size_of::<FlowKey>(), 24);
        assert_eq!(size_of::<FlowState>(), 8 * 3 + 4 * 2);
        assert_eq!(size_of::<SignatureKey>(), 8 + MAX_SIGNATURE_LEN);
        assert_eq!(size_of::<TraceEvent>(), 16 + 8 * 3 + 2 + 6 + 8);
        assert_eq!(size_of::<SignatureEntry>(), 16);
        assert_eq!(size_of::<ScanPending>(), 16 * 2 + 8 + 4 * 3 + 4);
    }

    #[test]
    fn prefix_masks_match_their_lengths() {
        assert_eq!(prefix_mask(0), [0; 16]);
        assert_eq!(prefix_mask(128), [0xff; 16]);
        let v4 = prefix_mask(120);
        assert_eq!(&v4[..15], &[0xff; 15]);
        assert_eq!(v4[15], 0);
        let m = prefix_mask(61);
        assert_eq!(&m[..7], &[0xff; 7]);
        assert_eq!(m[7], 0xf8);
        assert_eq!(&m[8..], &[0; 8]);
        for level in 0..PREFIX_LEVELS {
            assert_eq!(
                Config::DEFAULT.prefix_masks[level],
                prefix_mask(Config::DEFAULT.prefix_lens[level])
            );
        }
    }

    #[test]
    fn signature_keys_are_lowercased_whole_tokens() {
        let key = SignatureKey::new(SignatureKind::Fingerprint, b"Friendly-Scanner").unwrap();
        assert_eq!(key.token_bytes(), b"friendly-scanner");
        assert_eq!(key.kind, SignatureKind::Fingerprint as u8);
        assert_eq!(
            SignatureKey::new(SignatureKind::Trap, b""),
            Err(SignatureError::Empty)
        );
        assert_eq!(
            SignatureKey::new(SignatureKind::Trap, b"a b"),
            Err(SignatureError::BadByte(1))
        );
        assert_eq!(
            SignatureKey::new(SignatureKind::Trap, &[b'a'; 33]),
            Err(SignatureError::TooLong)
        );
        assert_eq!(
            signature_ban_kind(BAN_CLASS_SIGNATURE | 1),
            Some(SignatureKind::Trap)
        );
        assert_eq!(signature_ban_kind(BAN_CLASS_AUTH), None);
    }

    #[test]
    fn gcra_burst_round_trips() {
        let limit = RateLimit::per_second(5, 40);
        assert_eq!(limit.interval_ns, 200_000_000);
        assert_eq!(limit.burst(), 40);
        assert_eq!(RateLimit::per_second(0, 10).burst(), 0);
        assert_eq!(RateLimit::per_second(3, 0).burst(), 1);
    }

    #[test]
    fn counter_indices_are_dense_and_in_range() {
        assert_eq!(
            packet_counter_index(Verdict::Pass, MethodClass::Register),
            0
        );
        let last = packet_counter_index(
            Verdict::ALL[Verdict::COUNT - 1],
            MethodClass::ALL[MethodClass::COUNT - 1],
        );
        assert_eq!(last + 1, event_counter_index(EventCounter::BansIssued));
        assert_eq!(
            event_counter_index(EventCounter::ALL[EventCounter::COUNT - 1]) + 1,
            COUNTER_SLOTS
        );
    }
}
