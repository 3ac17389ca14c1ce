//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`, `metav1.LabelSelector`),
//! parsed and matched as k8s.io/apimachinery does, with its error messages, so kubectl users
//! see the text they know.
//!
//! Both are pure: parsing turns a string into requirements, matching reads an object's labels
//! or fields through the caller. Which fields a kind supports is the registry's business
//! (`ResourceType::field_selectors`); the caller checks [`FieldSelector::requirements`]
//! against it before listing.

mod field;
mod label;
mod validation;

pub use field::{FieldOperator, FieldRequirement, FieldSelector, field_value};
pub use label::{LabelSelector, Operator, Requirement};

/// Why a selector was rejected; the messages are apimachinery's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// One requirement of a label selector is malformed (wraps the reason).
    #[error("unable to parse requirement: {0}")]
    Requirement(Box<SelectorError>),
    /// A token was not what the grammar allows, e.g. `found '(', expected: identifier`.
    #[error("found '{found}', expected: {expected}")]
    Unexpected {
        /// The text found (empty at the end of the input).
        found: String,
        /// What the grammar allows there.
        expected: String,
    },
    /// A label key is not a qualified name.
    #[error("invalid label key {key:?}: {reason}")]
    LabelKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A label value is too long or has characters labels may not hold.
    #[error("invalid label value: {value:?}: at key: {key:?}: {reason}")]
    LabelValue {
        /// The key the value belongs to.
        key: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The values do not suit the operator (e.g. `a>x`, an empty `in ()` set).
    #[error("values: Invalid value: {values:?}: {reason}")]
    Values {
        /// The values as given.
        values: Vec<String>,
        /// What the operator needs.
        reason: String,
    },
    /// A `metav1.LabelSelector` object is malformed (wrong types, unknown operator).
    #[error("invalid label selector object: {0}")]
    Object(String),
    /// A field selector term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm {
        /// The whole selector.
        selector: String,
        /// The term that could not be split.
        term: String,
    },
    /// A field selector value has a bad escape or an unescaped `,`/`=`.
    #[error("invalid field selector: {0}")]
    FieldValue(String),
}
