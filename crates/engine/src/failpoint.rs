//! Crash and failure points for the crash tests (`ACCRUAL_FAILPOINT`),
//! compiled in only with the `failpoints` feature, which only the test
//! suite enables. Without it every point is an empty inline function, and
//! nothing reads the variable.

#[cfg(not(feature = "failpoints"))]
pub(crate) use none::Failpoint;
#[cfg(feature = "failpoints")]
pub(crate) use points::Failpoint;

#[cfg(feature = "failpoints")]
mod points {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Test-only crash points, from `ACCRUAL_FAILPOINT=<point>[:<n>][,...]`:
    /// the process aborts at the n-th time (default first) it reaches
    /// `<point>` (or, for a failure point, that one call fails; for a delay
    /// point, n is the pause in ms).
    pub(crate) struct Failpoint {
        points: Vec<(String, u64, AtomicU64)>,
    }

    impl Failpoint {
        pub fn from_env() -> Failpoint {
            let spec = std::env::var("ACCRUAL_FAILPOINT").unwrap_or_default();
            let points = spec
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once(':') {
                    Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1), AtomicU64::new(0)),
                    None => (p.to_string(), 1, AtomicU64::new(0)),
                })
                .collect();
            Failpoint { points }
        }

        fn find(&self, name: &str) -> Option<(u64, &AtomicU64)> {
            self.points.iter().find(|(point, ..)| point == name).map(|(_, n, hits)| (*n, hits))
        }

        /// A pause: at `<point>:<ms>`, sleeps that long.
        pub fn delay(&self, name: &str) {
            if let Some((ms, _)) = self.find(name) {
                std::thread::sleep(Duration::from_millis(ms));
            }
        }

        /// A failure: true once, the n-th time `<point>` is reached.
        pub fn trips(&self, name: &str) -> bool {
            self.find(name).is_some_and(|(n, hits)| hits.fetch_add(1, Ordering::SeqCst) + 1 == n)
        }

        /// A crash: aborts the process the n-th time `<point>` is reached.
        pub fn hit(&self, name: &str) {
            if let Some((n, hits)) = self.find(name) {
                if hits.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                    eprintln!("failpoint {name} reached: aborting the process");
                    std::process::abort();
                }
            }
        }
    }
}

#[cfg(not(feature = "failpoints"))]
mod none {
    /// No failure points: a product build.
    pub(crate) struct Failpoint;

    impl Failpoint {
        pub fn from_env() -> Failpoint {
            Failpoint
        }

        #[inline(always)]
        pub fn delay(&self, _name: &str) {}

        #[inline(always)]
        pub fn trips(&self, _name: &str) -> bool {
            false
        }

        #[inline(always)]
        pub fn hit(&self, _name: &str) {}
    }
}
