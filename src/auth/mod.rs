//! Authentication and authorization: JWT (HS256/384/512), API keys, and the
//! per-document permission checks of docs/protocol.md §5–§6.

pub(crate) mod jwt;
pub(crate) mod permissions;

pub(crate) use jwt::{AuthError, JwtSettings};
pub use jwt::{Authenticator, TokenKind};
pub use permissions::{Identity, Permissions};
