//! The one macro behind every spec-numbered value of this crate (leaves, exit reasons, GHCI
//! codes, state-machine states, SEPT states, metadata contexts).
//!
//! An *open enum* is a transparent newtype over the raw number with named associated
//! constants: values the specification does not name survive a round trip and print as a
//! number. Every such type gets `from_raw`/`raw`, `name()` (the specification's name),
//! `is_known()`, `ALL` (every named value in definition order), `From` conversions both ways,
//! `Default` (raw 0) and `Debug`/`Display`.
//!
//! Two input forms, for the two ways names are spelt:
//! * `Name(u16), unknown = "SEAMCALL leaf"; CONST = 2 => "TDH.MEM.PAGE.ADD", …` — explicit
//!   display names (dotted spec names). Display of an unnamed value: `SEAMCALL leaf 0x99`;
//!   Debug: `Name(0x2) TDH.MEM.PAGE.ADD`.
//! * `pub struct Name(u8); CONST = 1, …` — the constant's identifier is the spec name.
//!   Display of an unnamed value: `0x99`; Debug: `Name::CONST` or `Name(0x99)`.

/// See the module documentation.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident($ty:ty), unknown = $unknown:literal;
        $( $(#[$cmeta:meta])* $const:ident = $value:expr => $text:literal ),* $(,)?
    ) => {
        $crate::open_enum::open_enum!(@common [$(#[$meta])*] pub $name($ty);
            $( [$(#[$cmeta])*] $const = $value => $text, )*);

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, concat!($unknown, " {:#x}"), self.0),
                }
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)?;
                if let Some(n) = self.name() {
                    write!(f, " {n}")?;
                }
                Ok(())
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($ty:ty);
        $( $(#[$cmeta:meta])* $const:ident = $value:expr, )*
    ) => {
        $crate::open_enum::open_enum!(@common [$(#[$meta])*] $vis $name($ty);
            $( [$(#[$cmeta])*] $const = $value => stringify!($const), )*);

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}::{}", stringify!($name), n),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{:#x}", self.0),
                }
            }
        }
    };
    (@common [$(#[$meta:meta])*] $vis:vis $name:ident($ty:ty);
        $( [$(#[$cmeta:meta])*] $const:ident = $value:expr => $text:expr, )*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[repr(transparent)]
        $vis struct $name(pub $ty);

        impl $name {
            $( $(#[$cmeta])* pub const $const: $name = $name($value); )*

            /// Every named value, in definition order.
            pub const ALL: &'static [$name] = &[$($name($value)),*];

            /// Wraps a raw value (known or not).
            pub const fn from_raw(raw: $ty) -> Self {
                $name(raw)
            }

            /// The raw value.
            pub const fn raw(self) -> $ty {
                self.0
            }

            /// The specification's name of this value, or `None` for an unnamed value.
            #[allow(clippy::match_single_binding)]
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( v if v == $value => Some($text), )*
                    _ => None,
                }
            }

            /// Whether the value is one the specification names.
            pub const fn is_known(self) -> bool {
                self.name().is_some()
            }
        }

        impl From<$ty> for $name {
            fn from(raw: $ty) -> Self {
                $name(raw)
            }
        }

        impl From<$name> for $ty {
            fn from(v: $name) -> $ty {
                v.0
            }
        }
    };
}
pub(crate) use open_enum;
