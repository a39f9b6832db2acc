//! Who a connection is and what it may read and write (docs/protocol.md §6).

use serde_json::Value;

use crate::protocol::message::PermissionsBody;

/// `canRead`/`canWrite` lists (exact ids or the lone `"*"`) and the admin flag.
/// Write does not imply read, as in TS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    pub can_read: Vec<String>,
    pub can_write: Vec<String>,
    pub is_admin: bool,
}

impl Permissions {
    /// Everything readable and writable, not admin: anonymous connections.
    pub(crate) fn all_documents() -> Permissions {
        Permissions {
            can_read: vec!["*".into()],
            can_write: vec!["*".into()],
            is_admin: false,
        }
    }

    /// Admin: what an API key grants (C# behaviour).
    pub fn admin() -> Permissions {
        Permissions {
            can_read: Vec::new(),
            can_write: Vec::new(),
            is_admin: true,
        }
    }

    pub(crate) fn can_read(&self, document_id: &str) -> bool {
        self.is_admin || grants(&self.can_read, document_id)
    }

    pub(crate) fn can_write(&self, document_id: &str) -> bool {
        self.is_admin || grants(&self.can_write, document_id)
    }

    /// Read from a `permissions` claim: an object, or a string holding a JSON object
    /// (C# issuers). Anything else yields no permissions instead of failing later.
    pub(crate) fn from_claim(claim: Option<&Value>) -> Permissions {
        let parsed = match claim {
            Some(Value::Object(_)) => claim.cloned(),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
            _ => None,
        };
        parsed
            .and_then(|v| serde_json::from_value::<LenientPermissions>(v).ok())
            .map(LenientPermissions::into_permissions)
            .unwrap_or_default()
    }

    pub(crate) fn to_body(&self) -> PermissionsBody {
        PermissionsBody {
            can_read: self.can_read.clone(),
            can_write: self.can_write.clone(),
            is_admin: self.is_admin,
        }
    }
}

/// Accepts lists with non-string entries (ignored) and a missing admin flag.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LenientPermissions {
    #[serde(default)]
    can_read: Option<Value>,
    #[serde(default)]
    can_write: Option<Value>,
    #[serde(default)]
    is_admin: Option<Value>,
}

impl LenientPermissions {
    fn into_permissions(self) -> Permissions {
        fn list(v: Option<Value>) -> Vec<String> {
            match v {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .filter_map(|i| match i {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            }
        }
        Permissions {
            can_read: list(self.can_read),
            can_write: list(self.can_write),
            is_admin: self.is_admin == Some(Value::Bool(true)),
        }
    }
}

fn grants(list: &[String], document_id: &str) -> bool {
    list.iter()
        .any(|entry| entry == "*" || entry == document_id)
}

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub email: Option<String>,
    pub permissions: Permissions,
}

impl Identity {
    /// The identity auth-disabled connections get at connect (TS: `anonymous-<ip>`).
    pub(crate) fn anonymous_at(ip: &str) -> Identity {
        Identity {
            user_id: format!("anonymous-{ip}"),
            email: None,
            permissions: Permissions::all_documents(),
        }
    }

    /// The identity of an anonymous `auth` message with auth disabled.
    pub(crate) fn anonymous() -> Identity {
        Identity {
            user_id: "anonymous".into(),
            email: None,
            permissions: Permissions::all_documents(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcard_exact_and_admin() {
        let p = Permissions {
            can_read: vec!["a".into()],
            can_write: vec!["*".into()],
            is_admin: false,
        };
        assert!(p.can_read("a"));
        assert!(!p.can_read("b"), "write does not imply read");
        assert!(p.can_write("b"));
        assert!(!p.can_read("a*"));
        assert!(Permissions::admin().can_read("x"));
        assert!(Permissions::all_documents().can_write("x"));
        assert!(!Permissions::default().can_read("x"));
    }

    #[test]
    fn no_prefix_matching() {
        let p = Permissions {
            can_read: vec!["room:".into(), "room:*".into()],
            ..Permissions::default()
        };
        assert!(!p.can_read("room:1"));
    }

    #[test]
    fn claim_forms() {
        let obj = json!({"canRead":["a"],"canWrite":["b", 3],"isAdmin":false});
        let p = Permissions::from_claim(Some(&obj));
        assert_eq!(p.can_read, vec!["a".to_string()]);
        assert_eq!(p.can_write, vec!["b".to_string()]);
        let s = Value::String(r#"{"isAdmin":true}"#.into());
        assert!(Permissions::from_claim(Some(&s)).is_admin);
        assert_eq!(Permissions::from_claim(None), Permissions::default());
        assert_eq!(
            Permissions::from_claim(Some(&json!(["x"]))),
            Permissions::default()
        );
        assert_eq!(
            Permissions::from_claim(Some(&json!("not json"))),
            Permissions::default()
        );
    }
}
