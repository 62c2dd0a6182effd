//! One of two futures of different types, as one future. A send that is
//! nearly always one exchange returns that exchange's future as it is,
//! rather than from inside an `async fn` of its own: such a layer would hold
//! its arguments again and be copied whole into its caller (about 200
//! instructions per request, callgrind). The rare other kind is boxed. The
//! projection is pin-project-lite's: no `unsafe` written here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

pin_project! {
    #[project = Side]
    pub enum Either<A, B> {
        Usual { #[pin] future: A },
        Rare { #[pin] future: B },
    }
}

impl<A: Future, B: Future<Output = A::Output>> Future for Either<A, B> {
    type Output = A::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
        match self.project() {
            Side::Usual { future } => future.poll(cx),
            Side::Rare { future } => future.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn either_side_gives_its_future_s_output() {
        let usual: Either<_, std::future::Ready<u8>> = Either::Usual {
            future: async { 1u8 },
        };
        assert_eq!(usual.await, 1);
        let rare: Either<std::future::Ready<u8>, _> = Either::Rare {
            future: Box::pin(async { 2u8 }),
        };
        assert_eq!(rare.await, 2);
    }
}
