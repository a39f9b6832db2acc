//! Authentication and authorization: JWT (HS256/384/512), API keys, and the
//! per-document permission checks of docs/protocol.md §5–§6.

pub mod jwt;
pub(crate) mod permissions;

pub use jwt::{AuthError, Authenticator, JwtSettings, TokenKind};
pub use permissions::{Identity, Permissions};
