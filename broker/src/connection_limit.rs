//! `max.connections` as a count of permits that can change while the broker runs (Kafka lets
//! AlterConfigs change it cluster-wide). The accept loops take a permit before accepting, so
//! clients beyond the limit wait in the kernel's backlog instead of being refused.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    state: Mutex<LimitState>,
}

struct LimitState {
    limit: usize,
    /// Permits to retire as connections close, after the limit shrank below the number of
    /// connections open at the time.
    owed: usize,
}

/// One connection's place under the limit; given back when the connection ends.
pub struct ConnectionPermit {
    limit: Arc<ConnectionLimit>,
    permit: Option<OwnedSemaphorePermit>,
}

impl ConnectionLimit {
    pub fn new(limit: usize) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            permits: Arc::new(Semaphore::new(limit)),
            state: Mutex::new(LimitState { limit, owed: 0 }),
        })
    }

    /// Waits for room for one more connection. `None` once the limit is closed.
    pub async fn acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(ConnectionPermit {
            limit: Arc::clone(self),
            permit: Some(permit),
        })
    }

    /// Changes the limit. Growing frees room at once; shrinking takes the free places away and
    /// retires the rest as open connections close (none is cut).
    pub fn set(&self, limit: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if limit > st.limit {
            let grow = limit - st.limit;
            let repaid = grow.min(st.owed);
            st.owed -= repaid;
            self.permits.add_permits(grow - repaid);
        } else {
            let shrink = st.limit - limit;
            let taken = self.permits.forget_permits(shrink);
            st.owed += shrink - taken;
        }
        st.limit = limit;
    }
}

impl ConnectionPermit {
    /// Keeps the permit unless the limit shrank since it was taken and places are still owed:
    /// then the permit is retired (`None`) and the caller must wait for another.
    pub fn revalidate(mut self) -> Option<ConnectionPermit> {
        let mut st = self.limit.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.owed == 0 {
            drop(st);
            return Some(self);
        }
        st.owed -= 1;
        drop(st);
        if let Some(permit) = self.permit.take() {
            permit.forget();
        }
        None
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut st = self.limit.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.owed > 0 {
            st.owed -= 1;
            permit.forget();
        }
        // Otherwise dropping `permit` returns it to the semaphore.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(l: &ConnectionLimit) -> usize {
        l.permits.available_permits()
    }

    #[tokio::test]
    async fn the_limit_grows_at_once_and_shrinks_as_connections_close() {
        let limit = ConnectionLimit::new(3);
        let a = limit.acquire().await.unwrap();
        let b = limit.acquire().await.unwrap();
        assert_eq!(free(&limit), 1);
        // Shrink to 1 with two open: the free place goes now, one more when one closes.
        limit.set(1);
        assert_eq!(free(&limit), 0);
        drop(a);
        assert_eq!(free(&limit), 0, "the closing connection's place is retired");
        drop(b);
        assert_eq!(free(&limit), 1);
        // Grow back: room at once.
        limit.set(4);
        assert_eq!(free(&limit), 4);
        // Shrinking and growing again before anything closes repays what was owed.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(limit.acquire().await.unwrap());
        }
        limit.set(2);
        limit.set(3);
        drop(held);
        assert_eq!(free(&limit), 3);
        // A permit taken before the limit shrank is retired by revalidate while places are
        // owed, and kept once none are.
        let early = limit.acquire().await.unwrap();
        let other = limit.acquire().await.unwrap();
        let third = limit.acquire().await.unwrap();
        limit.set(2);
        assert!(early.revalidate().is_none(), "owed: retired");
        let _other = other.revalidate().expect("nothing owed any more: kept");
        drop(third);
        assert_eq!(free(&limit), 1);
    }
}
