//! [`Role`]: what a user is on the platform.

use serde::{Deserialize, Serialize};

/// Hosts list properties; guests book them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Guest,
    Host,
}

impl Role {
    /// The lower-case name the database stores and the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Guest => "guest",
            Role::Host => "host",
        }
    }

    /// Reads a stored role; never fails: anything but `host` is a guest.
    pub fn from_db(s: &str) -> Role {
        if s == "host" { Role::Host } else { Role::Guest }
    }
}
