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

/// The fields of one head.
#[derive(Debug)]
pub struct FieldSpans {
    few: [Span; FEW],
    many: Vec<Span>,
    count: usize,
}

impl FieldSpans {
    /// Where `fields`, parsed from `head`, lie in it. Inlined: the caller's
    /// own slot is filled, rather than a copy of the whole array returned.
    #[inline(always)]
    pub fn of(head: &[u8], fields: &[httparse::Header<'_>]) -> Self {
        let base = head.as_ptr() as usize;
        let at = |s: &[u8]| {
            let from = (s.as_ptr() as usize - base) as u32;
            (from, from + s.len() as u32)
        };
        let mut spans = Self {
            few: [Span([0; 4]); FEW],
            many: Vec::new(),
            count: fields.len(),
        };
        if fields.len() > FEW {
            spans.many.resize(fields.len(), Span::default());
        }
        let slots = if fields.len() > FEW {
            &mut spans.many[..]
        } else {
            &mut spans.few[..fields.len()]
        };
        for (slot, field) in slots.iter_mut().zip(fields) {
            let (name, value) = (at(field.name.as_bytes()), at(field.value));
            *slot = Span([name.0, name.1, value.0, value.1]);
        }
        spans
    }

    #[inline]
    pub fn as_slice(&self) -> &[Span] {
        if self.count > FEW {
            &self.many
        } else {
            &self.few[..self.count]
        }
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
            let spans = FieldSpans::of(&head, request.headers);
            assert_eq!(spans.as_slice().len(), count);
            for (i, span) in spans.as_slice().iter().enumerate() {
                assert_eq!(&head[span.name()], format!("x-{i}").as_bytes());
                assert_eq!(&head[span.value()], format!("value {i}").as_bytes());
            }
        }
    }
}
