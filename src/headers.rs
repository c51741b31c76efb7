//! Request and response headers as Meridian holds them: `(name, value)` pairs with lower-case
//! names, in arrival order (a repeated header appears repeatedly).

/// The first value of a header, by its lower-case name.
pub fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
