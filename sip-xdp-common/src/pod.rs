//! `aya::Pod` for every type user space reads from or writes to a map.

use crate::*;
// SAFETY: all of these are #[repr(C)], made only of integers and byte arrays, with explicit
// padding fields, so every bit pattern is valid and there are no uninitialised bytes.
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for SourceKey {}
unsafe impl aya::Pod for SourceState {}
unsafe impl aya::Pod for DenyEntry {}
unsafe impl aya::Pod for AllowEntry {}
unsafe impl aya::Pod for FragmentKey {}
unsafe impl aya::Pod for FragmentFate {}
unsafe impl aya::Pod for BanEvent {}
unsafe impl aya::Pod for DurableBan {}
unsafe impl aya::Pod for VerifiedSource {}
unsafe impl aya::Pod for AnswerState {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowState {}
unsafe impl aya::Pod for PrefixKey {}
unsafe impl aya::Pod for SignatureKey {}
unsafe impl aya::Pod for SignatureEntry {}
unsafe impl aya::Pod for ScanPending {}
unsafe impl aya::Pod for TraceEvent {}
