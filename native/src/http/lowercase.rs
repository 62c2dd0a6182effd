//! Field names lower-cased as they are written. Both writers lower every
//! name of a kept head (the map's names are lower case, and so is what the
//! proxy writes); `make_ascii_lowercase` does it a byte at a time, about six
//! instructions a byte (callgrind: 470 per answer head of nginx's eight
//! fields). Eight bytes at a time, a name costs a few words. A differential
//! test holds it to the library's `to_ascii_lowercase`.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = ONES * 0x80;

/// Appends `name` to `dst`, its ASCII capitals lowered; every other byte
/// (obs-text included) as it is. Only whole words are copied (a copy of a
/// length known when compiled is a move, not a call): a short name's word
/// is cut back after it, a longer name's last word overlaps the one before.
#[inline]
pub fn extend_lowercase(dst: &mut Vec<u8>, name: &[u8]) {
    let start = dst.len();
    dst.reserve(name.len() + 8);
    if name.len() < 8 {
        let word = name
            .iter()
            .rev()
            .fold(0u64, |word, &byte| word << 8 | u64::from(byte));
        dst.extend_from_slice(&lower_word(word).to_le_bytes());
        dst.truncate(start + name.len());
        return;
    }
    let mut words = name.chunks_exact(8);
    for word in &mut words {
        dst.extend_from_slice(&lower_word(read_word(word)).to_le_bytes());
    }
    if !words.remainder().is_empty() {
        let last = name.len() - 8;
        dst.truncate(start + last);
        dst.extend_from_slice(&lower_word(read_word(&name[last..])).to_le_bytes());
    }
}

fn read_word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or_default())
}

/// Each byte of `word` in `A..=Z` gets its 0x20 bit; no byte carries into
/// the next (a byte's low seven bits plus at most 0x3f stay under 0x100).
fn lower_word(word: u64) -> u64 {
    let low_seven = word & !HIGH_BITS;
    let from_a = low_seven + ONES * u64::from(0x80 - b'A');
    let past_z = low_seven + ONES * u64::from(0x7f - b'Z');
    let capital = from_a & !past_z & !word & HIGH_BITS;
    word | (capital >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(name: &[u8]) -> Vec<u8> {
        let mut dst = b"x".to_vec();
        extend_lowercase(&mut dst, name);
        dst
    }

    #[test]
    fn every_byte_in_every_place_is_lowered_as_the_library_lowers_it() {
        for place in 0..9 {
            for byte in 0..=255u8 {
                let mut name = b"Content-TypeX".to_vec();
                name[place] = byte;
                let mut expected = b"x".to_vec();
                expected.extend(name.to_ascii_lowercase());
                assert_eq!(written(&name), expected, "byte {byte:#x} at {place}");
            }
        }
    }

    proptest! {
        #[test]
        fn any_name_is_lowered_as_the_library_lowers_it(
            name in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut expected = b"x".to_vec();
            expected.extend(name.to_ascii_lowercase());
            prop_assert_eq!(written(&name), expected);
        }
    }
}
