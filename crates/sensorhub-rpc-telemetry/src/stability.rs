//! Which version of the RPC semantic conventions the layers emit, chosen by
//! `OTEL_SEMCONV_STABILITY_OPT_IN` as the conventions' transition rule says
//! (the note at the top of the RPC metrics and spans pages):
//!
//! - unset (or no `rpc` value in the list): what these layers have always
//!   emitted, semconv **v1.40.0** (`rpc.response.status_code`);
//! - `rpc`: the current names only. After v1.44.0 the status attribute was
//!   renamed `rpc.status_code` (semantic-conventions #3921); no release
//!   carries it yet, so this mode follows the conventions' `main` after
//!   v1.44.0 and its telemetry has no schema URL (there is no published
//!   schema to point at);
//! - `rpc/dup`: both names on every span and measurement (it wins over `rpc`
//!   when both are listed), for dashboards moving from one to the other.
//!
//! The variable is a list shared by every instrumentation in the process
//! (`http`, `database`, …): values of other categories are not ours and are
//! ignored. A value that starts with `rpc` and is neither of ours is a typo,
//! refused by [`SemconvStability::parse`] (the binary checks it at startup).
//!
//! Nothing else differs between the modes: metric names, units, buckets and
//! every other attribute are the same in v1.40.0 and after v1.44.0.

use crate::conventions::semconv;

/// The environment variable that chooses the mode.
pub const OPT_IN_VARIABLE: &str = "OTEL_SEMCONV_STABILITY_OPT_IN";

/// The RPC semantic conventions the layers emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SemconvStability {
    /// v1.40.0: `rpc.response.status_code` (the default).
    #[default]
    V1_40,
    /// `rpc`: the names after v1.44.0 only (`rpc.status_code`).
    Latest,
    /// `rpc/dup`: both.
    Duplicate,
}

impl SemconvStability {
    /// The mode `OTEL_SEMCONV_STABILITY_OPT_IN` asks for; the default when it
    /// is unset or unusable (the binary refuses an unusable one at startup,
    /// with [`SemconvStability::parse`]'s message).
    pub fn from_env() -> Self {
        std::env::var(OPT_IN_VARIABLE)
            .ok()
            .and_then(|list| Self::parse(&list).ok())
            .unwrap_or_default()
    }

    /// Reads a comma-separated opt-in list. `Err` names a value that looks
    /// like ours but is not (`rpc/dupe`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut latest = false;
        let mut duplicate = false;
        for value in list.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            match value {
                "rpc" => latest = true,
                "rpc/dup" => duplicate = true,
                other if other.starts_with("rpc") => {
                    return Err(format!(
                        "`{other}` is not an RPC opt-in; use rpc (current names only) or rpc/dup (both)"
                    ));
                }
                // Another category's (http, database, ...): not ours.
                _ => {}
            }
        }
        Ok(if duplicate {
            Self::Duplicate
        } else if latest {
            Self::Latest
        } else {
            Self::V1_40
        })
    }

    /// Whether the v1.40.0 names are emitted.
    pub fn emits_v1_40(self) -> bool {
        matches!(self, Self::V1_40 | Self::Duplicate)
    }

    /// Whether the names after v1.44.0 are emitted.
    pub fn emits_latest(self) -> bool {
        matches!(self, Self::Latest | Self::Duplicate)
    }

    /// The schema URL of the instrumentation scope. `rpc/dup` keeps v1.40.0's:
    /// everything v1.40.0 names is there, and the one extra attribute does
    /// not contradict it.
    pub fn schema_url(self) -> Option<&'static str> {
        self.emits_v1_40().then_some(semconv::SCHEMA_URL)
    }

    /// The status attribute keys of this mode, in the order they are set.
    pub(crate) fn status_keys(self) -> &'static [&'static str] {
        match self {
            Self::V1_40 => &[semconv::RPC_RESPONSE_STATUS_CODE],
            Self::Latest => &[semconv::RPC_STATUS_CODE],
            Self::Duplicate => &[semconv::RPC_RESPONSE_STATUS_CODE, semconv::RPC_STATUS_CODE],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SemconvStability::{self, *};

    #[test]
    fn the_opt_in_list_chooses_the_mode() {
        for (list, mode) in [
            ("", V1_40),
            ("http", V1_40),
            ("rpc", Latest),
            (" http , rpc ", Latest),
            ("rpc/dup", Duplicate),
            ("rpc,rpc/dup", Duplicate),
            ("rpc/dup,rpc", Duplicate),
            ("database/dup,rpc/dup", Duplicate),
        ] {
            assert_eq!(SemconvStability::parse(list), Ok(mode), "{list:?}");
        }
    }

    #[test]
    fn a_misspelt_rpc_value_is_refused() {
        for list in ["rpc/dupe", "rpc,rpcdup", "rpc/"] {
            let error = SemconvStability::parse(list).expect_err(list);
            assert!(error.contains("rpc/dup"), "{error}");
        }
    }

    #[test]
    fn each_mode_names_its_status_attributes() {
        assert_eq!(V1_40.status_keys(), ["rpc.response.status_code"]);
        assert_eq!(Latest.status_keys(), ["rpc.status_code"]);
        assert_eq!(
            Duplicate.status_keys(),
            ["rpc.response.status_code", "rpc.status_code"]
        );
        assert_eq!(
            V1_40.schema_url(),
            Some("https://opentelemetry.io/schemas/1.40.0")
        );
        assert_eq!(Latest.schema_url(), None);
        assert_eq!(Duplicate.schema_url(), V1_40.schema_url());
    }
}
