//! The catalogue of limits: every [`Action`] the service limits declares,
//! in one place, its key name, its setting, its default rate and whether an
//! unavailable limiter lets it through (crates.io's `LimitedAction` is the
//! model). A [`Scope`] is one action for one subject (a client, a user, an
//! email); it is what a check counts.

use std::time::Duration;

use super::Rate;
use crate::domain::{ClientAddr, Email};
use crate::kv::keys::email_tag;

/// Something the service limits (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Every `/api/` request of a client without a session.
    Anon,
    /// Every `/api/` request of a signed-in user.
    User,
    /// Booking attempts of a user.
    Booking,
    /// One-time code requests for an email (from any client).
    OtpEmail,
    /// One-time code requests for an email from one client: a client with
    /// none in the window is not held to [`Action::OtpEmail`] (see
    /// [`super::RateLimiter::check_with_ceiling`]); a sign-in with a code
    /// clears it.
    OtpEmailClient,
    /// One-time code requests from one client (any email).
    OtpClient,
    /// Registrations from one client.
    Register,
    /// Password logins for an email from one client (success resets it).
    Login,
    /// Password logins for an email from every client: a looser ceiling,
    /// not applied to a client with no attempt of its own in the window.
    LoginEmail,
    /// Property creations of a host.
    PropertyCreate,
}

/// How an action is limited: the operator's setting and its default.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Part of the state's key and the `scope` label of the metrics.
    pub name: &'static str,
    /// The settings key (`STAYAFRICA_` + upper case as a variable); two
    /// actions may share one (the pair and the ceiling of one limit).
    pub setting: &'static str,
    pub default: Rate,
    /// An unavailable limiter lets the request through (general
    /// throttles) rather than refusing it (sign-in, bookings, writes).
    pub fails_open: bool,
    /// One line for the README and the API description.
    pub describe: &'static str,
}

const HOUR: Duration = Duration::from_secs(3600);
const QUARTER: Duration = Duration::from_secs(900);

impl Action {
    /// Every action, in the order of the README's table.
    pub const ALL: [Action; 10] = [
        Action::Anon,
        Action::User,
        Action::Booking,
        Action::OtpEmail,
        Action::OtpEmailClient,
        Action::OtpClient,
        Action::Register,
        Action::Login,
        Action::LoginEmail,
        Action::PropertyCreate,
    ];

    /// The catalogue entry of this action.
    pub const fn spec(self) -> Spec {
        const fn spec(
            name: &'static str,
            setting: &'static str,
            default: Rate,
            fails_open: bool,
            describe: &'static str,
        ) -> Spec {
            Spec {
                name,
                setting,
                default,
                fails_open,
                describe,
            }
        }
        match self {
            Action::Anon => spec(
                "anon",
                "throttle_anon",
                Rate::new(100, HOUR),
                true,
                "requests of a client without a session, per client address (IPv6: per prefix)",
            ),
            Action::User => spec(
                "user",
                "throttle_user",
                Rate::new(1000, HOUR),
                true,
                "requests of a signed-in user",
            ),
            Action::Booking => spec(
                "booking",
                "throttle_booking",
                Rate::new(5, HOUR),
                false,
                "booking attempts per user",
            ),
            Action::OtpEmail => spec(
                "otp",
                "throttle_otp",
                Rate::new(5, HOUR),
                false,
                "one-time-code requests per email (a client with no request of its own for that email in the window is not held to it)",
            ),
            Action::OtpEmailClient => spec(
                "otp_pair",
                "throttle_otp",
                Rate::new(5, HOUR),
                false,
                "one-time-code requests per email and client address",
            ),
            Action::OtpClient => spec(
                "otp_client",
                "throttle_otp_client",
                Rate::new(20, HOUR),
                false,
                "one-time-code requests per client address",
            ),
            Action::Register => spec(
                "register",
                "throttle_register",
                Rate::new(50, HOUR),
                false,
                "registrations per client address",
            ),
            Action::Login => spec(
                "login",
                "throttle_login",
                Rate::new(5, QUARTER),
                false,
                "password logins per email and client address (a success clears it)",
            ),
            Action::LoginEmail => spec(
                "login_email",
                "throttle_login_email",
                Rate::new(50, QUARTER),
                false,
                "password logins per email from every address (a client with no attempt of its own in the window is not held to it)",
            ),
            Action::PropertyCreate => spec(
                "property_create",
                "throttle_property_create",
                Rate::new(50, HOUR),
                false,
                "property creations per host",
            ),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The configured rate of every action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttles([Rate; Action::ALL.len()]);

impl Default for Throttles {
    fn default() -> Self {
        Throttles(Action::ALL.map(|a| a.spec().default))
    }
}

impl Throttles {
    /// The rate of `action`.
    pub fn get(&self, action: Action) -> Rate {
        self.0[action.index()]
    }

    /// Sets the rate of `action`.
    pub fn set(&mut self, action: Action, rate: Rate) {
        self.0[action.index()] = rate;
    }

    /// Sets every action whose setting is `setting` (the pair and the
    /// ceiling of one limit share theirs).
    pub fn set_setting(&mut self, setting: &str, rate: Rate) {
        for a in Action::ALL {
            if a.spec().setting == setting {
                self.set(a, rate);
            }
        }
    }
}

/// One action for one subject: what a check counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Anon(ClientAddr),
    User(i64),
    Booking(i64),
    OtpEmail(Email),
    OtpEmailClient(Email, ClientAddr),
    OtpClient(ClientAddr),
    Register(ClientAddr),
    Login(Email, ClientAddr),
    LoginEmail(Email),
    PropertyCreate(i64),
}

impl Scope {
    /// The action this scope counts.
    pub fn action(&self) -> Action {
        match self {
            Scope::Anon(_) => Action::Anon,
            Scope::User(_) => Action::User,
            Scope::Booking(_) => Action::Booking,
            Scope::OtpEmail(_) => Action::OtpEmail,
            Scope::OtpEmailClient(..) => Action::OtpEmailClient,
            Scope::OtpClient(_) => Action::OtpClient,
            Scope::Register(_) => Action::Register,
            Scope::Login(..) => Action::Login,
            Scope::LoginEmail(_) => Action::LoginEmail,
            Scope::PropertyCreate(_) => Action::PropertyCreate,
        }
    }

    /// Stable: part of the state's key and of the `scope` metric label.
    pub fn name(&self) -> &'static str {
        self.action().spec().name
    }

    /// The subject part of the state's key: an address or prefix, an id,
    /// or an email's tag (never the email itself).
    pub fn subject(&self) -> String {
        match self {
            Scope::Anon(c) | Scope::OtpClient(c) | Scope::Register(c) => c.to_string(),
            Scope::User(id) | Scope::Booking(id) | Scope::PropertyCreate(id) => {
                itoa::Buffer::new().format(*id).to_owned()
            }
            Scope::OtpEmail(e) | Scope::LoginEmail(e) => email_tag(e),
            Scope::OtpEmailClient(e, c) | Scope::Login(e, c) => format!("{}:{c}", email_tag(e)),
        }
    }

    /// True where an unavailable limiter should let requests through.
    pub fn fails_open(&self) -> bool {
        self.action().spec().fails_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_and_settings_known() {
        let mut names: Vec<_> = Action::ALL.iter().map(|a| a.spec().name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
        for (i, a) in Action::ALL.iter().enumerate() {
            assert_eq!(a.index(), i, "ALL is in declaration order");
            assert!(a.spec().setting.starts_with("throttle_"));
        }
    }

    #[test]
    fn subjects_are_addresses_ids_and_email_tags() {
        let client = ClientAddr::new(std::net::IpAddr::from([10, 0, 0, 1]), 64);
        assert_eq!(Scope::Anon(client).subject(), "10.0.0.1");
        assert_eq!(Scope::User(-12).subject(), "-12");
        let email = Email::parse("Amara@Example.com").unwrap_or_else(|_| unreachable!());
        let subject = Scope::Login(email.clone(), client).subject();
        assert!(subject.ends_with(":10.0.0.1"), "{subject}");
        assert!(
            !subject.to_lowercase().contains("amara"),
            "no email in keys"
        );
    }

    #[test]
    fn a_shared_setting_sets_the_pair_and_the_ceiling() {
        let mut t = Throttles::default();
        let r = Rate::new(2, HOUR);
        t.set_setting("throttle_otp", r);
        assert_eq!(t.get(Action::OtpEmail), r);
        assert_eq!(t.get(Action::OtpEmailClient), r);
        assert_eq!(t.get(Action::OtpClient), Rate::new(20, HOUR));
    }
}
