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

task_keys! {}
