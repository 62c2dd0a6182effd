//! Where each field of a parsed head lies in its bytes: httparse's fields
//! borrow the read buffer, and the head is then split off and frozen, so
//! its names and values are found again by offset and taken as slices of
//! the frozen head, not copied. Kept on the stack for the usual few fields
//! (a zeroed array for all the fields a head may have would cost more than
//! the parse).

use std::ops::Range;

/// Fields whose places are kept on the stack.
const FEW: usize = 24;

/// One field's name and value, as offsets into its head (heads are bounded
/// far below 4 GiB): name from, name to, value from, value to. A plain
/// array, so that a fresh set is one `memset`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span([u32; 4]);

impl Span {
    #[inline]
    pub fn name(&self) -> Range<usize> {
        self.0[0] as usize..self.0[1] as usize
    }

    #[inline]
    pub fn value(&self) -> Range<usize> {
        self.0[2] as usize..self.0[3] as usize
    }
}

/// Room for the spans of one head: on the stack for the usual few, in `many`
/// beyond. Made by the caller, so that nothing of this size is returned (a
/// returned array is copied: about 400 instructions per request, measured).
#[derive(Debug)]
pub struct Room {
    pub few: [Span; FEW],
    pub many: Vec<Span>,
}

impl Room {
    #[inline]
    pub fn new() -> Self {
        Self {
            few: [Span([0; 4]); FEW],
            many: Vec::new(),
        }
    }

    /// Where `fields`, parsed from `head`, lie in it.
    #[inline]
    pub fn spans(&mut self, head: &[u8], fields: &[httparse::Header<'_>]) -> &[Span] {
        self.spans_checked(head, fields, |_, _| true)
            .expect("nothing refused")
    }

    /// As `spans`, with `check` shown each field's name and value on the
    /// way (in the same pass); `None` as soon as it refuses one.
    #[inline]
    pub fn spans_checked(
        &mut self,
        head: &[u8],
        fields: &[httparse::Header<'_>],
        mut check: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Option<&[Span]> {
        let base = head.as_ptr() as usize;
        let at = |s: &[u8]| {
            let from = (s.as_ptr() as usize - base) as u32;
            (from, from + s.len() as u32)
        };
        let slots = if fields.len() > FEW {
            self.many.resize(fields.len(), Span::default());
            &mut self.many[..]
        } else {
            &mut self.few[..fields.len()]
        };
        for (slot, field) in slots.iter_mut().zip(fields) {
            if !check(field.name.as_bytes(), field.value) {
                return None;
            }
            let (name, value) = (at(field.name.as_bytes()), at(field.value));
            *slot = Span([name.0, name.1, value.0, value.1]);
        }
        Some(slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_find_each_field_again_few_or_many() {
        for count in [0, 3, FEW, FEW + 5] {
            let mut head = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..count {
                head.extend_from_slice(format!("x-{i}: value {i}\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            let mut fields = vec![httparse::EMPTY_HEADER; count];
            let mut request = httparse::Request::new(&mut fields);
            request.parse(&head).unwrap();
            let mut room = Room::new();
            let spans = room.spans(&head, request.headers);
            assert_eq!(spans.len(), count);
            for (i, span) in spans.iter().enumerate() {
                assert_eq!(&head[span.name()], format!("x-{i}").as_bytes());
                assert_eq!(&head[span.value()], format!("value {i}").as_bytes());
            }
        }
    }
}
