//! Opaque identifiers and random strings.
//!
//! Ids are `prefix_` + 26 Crockford base32 characters: 48 bits of millisecond time then
//! 80 bits (the ULID layout), so they sort by creation time, which keyset pagination and
//! the ledger's order rely on. Within one process they are strictly increasing, also
//! within a millisecond: the 80 bits are a 16-bit sequence then 64 random bits.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::now_millis;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub(crate) const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Fills `buf` from the operating system's CSPRNG. Failure of the OS generator is not
/// recoverable in any meaningful way for a gateway that mints secrets.
pub fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // Without randomness we must not mint keys or ids.
        #[expect(clippy::panic, reason = "no safe way to continue without an OS RNG")]
        {
            panic!("operating system random generator failed: {e}");
        }
    }
}

thread_local! {
    /// SplitMix64 state, seeded once per thread from the OS. Ids need uniqueness, not
    /// secrecy: a syscall per request id was measurable on the hot path. Secrets (API
    /// keys) never use this; they come from [`fill_random`].
    static ID_STATE: std::cell::Cell<u64> = std::cell::Cell::new({
        let mut seed = [0u8; 8];
        fill_random(&mut seed);
        u64::from_le_bytes(seed)
    });
}

fn next_id_bits() -> u64 {
    ID_STATE.with(|state| {
        let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// The last id's millisecond (high 48 bits) and sequence within it (low 16 bits).
static LAST_ID: AtomicU64 = AtomicU64::new(0);

/// The (millisecond, sequence) of a new id: after every earlier one of this process, even
/// when the clock stands still or steps back (then the last millisecond goes on counting,
/// and a full sequence moves on to the next millisecond).
fn next_time_and_sequence() -> u64 {
    let now = u64::try_from(now_millis().max(0)).unwrap_or(0) & ((1 << 48) - 1);
    let mut next = 0;
    let _ = LAST_ID.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        next = if now > last >> 16 { now << 16 } else { last + 1 };
        Some(next)
    });
    next
}

/// A new time-ordered id such as `key_01JD7W5Q0R3XJ8Y2C4K6M8P0RT`. Unique, not secret.
pub fn new_id(prefix: &str) -> String {
    let value = u128::from(next_time_and_sequence()) << 64 | u128::from(next_id_bits());
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        out.push(CROCKFORD[((value >> (i * 5)) & 31) as usize] as char);
    }
    out
}

/// `len` uniformly random base62 characters (rejection sampling, no modulo bias).
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill_random(&mut buf);
        for b in buf {
            // 248 = 4 * 62: bytes at or above it would bias the distribution.
            if b < 248 && out.len() < len {
                out.push(BASE62[usize::from(b % 62)] as char);
            }
        }
    }
    out
}

/// Whether a caller-supplied request id is safe to echo and log.
pub fn is_valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_unique_and_ordered() {
        let a = new_id("key");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("key");
        assert!(a.starts_with("key_") && a.len() == 30, "{a}");
        assert!(a < b, "{a} !< {b}");
        // Within one millisecond, and across threads, each id is after the last.
        let ids: Vec<String> = (0..5_000).map(|_| new_id("led")).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order within a millisecond");
        let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(|| new_id("led"))).collect();
        let later: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(later.iter().all(|id| *id > ids[ids.len() - 1]));
        let mut unique = later.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4);
    }

    #[test]
    fn base62_is_base62() {
        let s = random_base62(100);
        assert_eq!(s.len(), 100);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_base62(30), random_base62(30));
    }

    #[test]
    fn request_ids() {
        assert!(is_valid_request_id("req_01ABC-x.y:z"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("a b"));
        assert!(!is_valid_request_id(&"a".repeat(129)));
    }
}
