//! [`declare_settings!`](crate::declare_settings): each configuration key declared once,
//! generating the settings struct, its `Default` and its flag struct.

/// Declares a settings struct, its `Default` and its flag struct from one list of keys.
///
/// A key is three things that must agree: a field of the settings struct (serde, with its
/// default), a flag (clap, optional, so only flags given override) and, through the loader,
/// an environment variable. Written by hand that is two structs and a `Default` impl kept in
/// sync by a test; the macro takes each key once — its meaning, its type, its default, its
/// flag's help text and clap attributes — and writes all three:
///
/// - the settings struct, with the key's doc comment and `#[serde(...)]` attributes;
/// - its `Default` impl, from each key's `= default`;
/// - the flag struct: the non-key flags given verbatim, then one flag per key, `--<key>`,
///   typed `Option<T>` for a key of type `T` (`Option<T>` stays `Option<T>`, a list
///   `Vec<T>` stays a list) and serialized only when given.
///
/// ```
/// use std::path::PathBuf;
/// use serde::{Deserialize, Serialize};
///
/// capstan_config::declare_settings! {
///     /// What the tool can be told.
///     #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
///     #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
///     pub struct ToolSettings;
///
///     /// The flag layer.
///     #[derive(Debug, Default, Clone, clap::Args, Serialize)]
///     #[serde(rename_all = "kebab-case")]
///     pub struct ToolFlags {
///         /// Config file.
///         #[arg(long)]
///         #[serde(skip)]
///         pub config: Option<PathBuf>,
///     }
///
///     keys {
///         /// The tool's state folder.
///         #[flag(help = "State folder [default: /var/lib/tool].", value_name = "DIR")]
///         data_dir: PathBuf = PathBuf::from("/var/lib/tool"),
///         /// Its name, if not the host's.
///         #[flag(help = "The name.", value_name = "NAME")]
///         name: Option<String> = None,
///     }
/// }
///
/// assert_eq!(ToolSettings::default().data_dir, PathBuf::from("/var/lib/tool"));
/// let flags = ToolFlags::default();
/// let _: (Option<PathBuf>, Option<String>) = (flags.data_dir, flags.name);
/// ```
///
/// The flag's help (`help = "…"`) becomes the flag field's doc comment, which clap turns
/// into the `--help` text and the generated reference; the key's own doc comment, which
/// may say more, documents the settings field.
#[macro_export]
macro_rules! declare_settings {
    // A key that is already optional: its flag has the same type.
    (@keys $settings:tt $flags:tt [$($fields:tt)*] [$($flag_fields:tt)*] [$($defaults:tt)*]
        $(#[doc = $doc:literal])*
        $(#[serde($($serde:tt)*)])*
        #[flag(help = $help:literal $(, $($arg:tt)*)?)]
        $key:ident : Option<$inner:ty> = $default:expr,
        $($rest:tt)*
    ) => {
        $crate::declare_settings!(@keys $settings $flags
            [$($fields)* $(#[doc = $doc])* $(#[serde($($serde)*)])* pub $key: Option<$inner>,]
            [$($flag_fields)*
                #[doc = $help]
                #[arg(long $(, $($arg)*)?)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $key: Option<$inner>,
            ]
            [$($defaults)* $key: $default,]
            $($rest)*
        );
    };
    // A list: its flag is repeatable, and given when not empty.
    (@keys $settings:tt $flags:tt [$($fields:tt)*] [$($flag_fields:tt)*] [$($defaults:tt)*]
        $(#[doc = $doc:literal])*
        $(#[serde($($serde:tt)*)])*
        #[flag(help = $help:literal $(, $($arg:tt)*)?)]
        $key:ident : Vec<$inner:ty> = $default:expr,
        $($rest:tt)*
    ) => {
        $crate::declare_settings!(@keys $settings $flags
            [$($fields)* $(#[doc = $doc])* $(#[serde($($serde)*)])* pub $key: Vec<$inner>,]
            [$($flag_fields)*
                #[doc = $help]
                #[arg(long $(, $($arg)*)?)]
                #[serde(skip_serializing_if = "Vec::is_empty")]
                pub $key: Vec<$inner>,
            ]
            [$($defaults)* $key: $default,]
            $($rest)*
        );
    };
    // Any other key: its flag is optional.
    (@keys $settings:tt $flags:tt [$($fields:tt)*] [$($flag_fields:tt)*] [$($defaults:tt)*]
        $(#[doc = $doc:literal])*
        $(#[serde($($serde:tt)*)])*
        #[flag(help = $help:literal $(, $($arg:tt)*)?)]
        $key:ident : $type:ty = $default:expr,
        $($rest:tt)*
    ) => {
        $crate::declare_settings!(@keys $settings $flags
            [$($fields)* $(#[doc = $doc])* $(#[serde($($serde)*)])* pub $key: $type,]
            [$($flag_fields)*
                #[doc = $help]
                #[arg(long $(, $($arg)*)?)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $key: Option<$type>,
            ]
            [$($defaults)* $key: $default,]
            $($rest)*
        );
    };
    // Every key taken: write the structs.
    (@keys
        [$(#[$settings_meta:meta])* $settings_vis:vis struct $settings:ident]
        [$(#[$flags_meta:meta])* $flags_vis:vis struct $flags:ident { $($extra:tt)* }]
        [$($fields:tt)*] [$($flag_fields:tt)*] [$($defaults:tt)*]
    ) => {
        $(#[$settings_meta])*
        $settings_vis struct $settings {
            $($fields)*
        }

        impl Default for $settings {
            fn default() -> Self {
                $settings {
                    $($defaults)*
                }
            }
        }

        $(#[$flags_meta])*
        $flags_vis struct $flags {
            $($extra)*
            $($flag_fields)*
        }
    };
    (
        $(#[$settings_meta:meta])*
        $settings_vis:vis struct $settings:ident;

        $(#[$flags_meta:meta])*
        $flags_vis:vis struct $flags:ident { $($extra:tt)* }

        keys { $($keys:tt)* }
    ) => {
        $crate::declare_settings!(@keys
            [$(#[$settings_meta])* $settings_vis struct $settings]
            [$(#[$flags_meta])* $flags_vis struct $flags { $($extra)* }]
            [] [] []
            $($keys)*
        );
    };
}
