//! Keys a plan sets for every task and a task may set for itself.
//!
//! Written at a plan's top level, such a key is the default of every task;
//! written in a `[[task]]`, it is that task's own. Each is declared once,
//! below, as an `Option` of the type a plan writes: the readers take it
//! from either level of a TOML or JSON plan (and from `--set`), a task's
//! own value wins over the plan's ([`TaskKeys::or`]), the plan's value is
//! kept in `session.json`'s settings and the one a task runs with in its
//! entry of `plan.json`, both flattened (a key left unset is not written,
//! so sessions made before it existed read back unchanged). The worker
//! hands a task's keys to the process it starts.
//!
//! Adding one: a line in the `task_keys!` call here (with a type whose
//! `Deserialize` refuses a wrong value, with a message), its use, and its
//! line in docs/plan.md.

use serde::{Deserialize, Serialize};

/// Declares [`TaskKeys`].
macro_rules! task_keys {
    ($($(#[$doc:meta])* $key:ident: $ty:ty,)*) => {
        /// Keys a plan sets for every task and a task may set for itself
        /// (see the module's documentation); `None` is unset.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct TaskKeys {
            $(
                $(#[$doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $key: Option<$ty>,
            )*
        }

        impl TaskKeys {
            /// Their names, as a plan writes them.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($key)),*];

            /// The keys this one sets, and for the others those of
            /// `defaults`.
            #[allow(unused_variables)]
            pub fn or(self, defaults: &TaskKeys) -> TaskKeys {
                TaskKeys {
                    $($key: self.$key.or_else(|| defaults.$key.clone()),)*
                }
            }
        }
    };
}

task_keys! {
    /// How much nicer than the worker the task's processes run (`nice -n`):
    /// a build or a test suite that yields the CPU to the agents.
    nice: Nice,
}

/// A niceness increment: 0 (as the worker) to 19 (the lowest priority).
/// Only lowering a priority needs no privilege, so none is negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Nice(u8);

impl Nice {
    /// The increment.
    pub fn get(self) -> i32 {
        i32::from(self.0)
    }
}

impl<'de> Deserialize<'de> for Nice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Nice, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Nice;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a niceness from 0 (as the worker) to 19 (lowest priority)")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Nice, E> {
                match u8::try_from(n) {
                    Ok(v) if v <= 19 => Ok(Nice(v)),
                    _ => Err(E::custom(format!(
                        "nice = {n} is out of range: use 0 (as the worker) to 19 (lowest priority)"
                    ))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Nice, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
            // `--set nice=99` reaches here as a string when 99 is refused.
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Nice, E> {
                match s.trim().parse::<i64>() {
                    Ok(n) => self.visit_i64(n),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}
