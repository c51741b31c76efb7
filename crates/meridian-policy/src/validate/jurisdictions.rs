//! `[jurisdictions]`: named sets of countries, built-ins first.

use super::*;

pub(super) fn read_jurisdictions(sink: &mut Sink, top: &Obj) -> BTreeMap<String, CountrySet> {
    let mut map: BTreeMap<String, CountrySet> = builtins()
        .into_iter()
        .map(|(n, cs)| {
            (
                n.to_string(),
                cs.into_iter().filter_map(Country::parse).collect(),
            )
        })
        .collect();
    let Some(table) = top.table(sink, "jurisdictions") else {
        return map;
    };
    for (name, item) in table.entries() {
        if map.contains_key(&name.value) {
            sink.error_help(
                name.span.as_ref(),
                format!(
                    "jurisdiction `{}` is built in and cannot be redefined",
                    name.value
                ),
                "choose another name, e.g. `my-eu`",
            );
            continue;
        }
        if !is_id(&name.value) {
            sink.error(
                name.span.as_ref(),
                bad_id_message("jurisdiction", &name.value),
            );
        }
        let Some(arr) = item.as_array() else {
            sink.error(
                name.span.as_ref(),
                format!(
                    "jurisdiction `{}` must be an array of country codes",
                    name.value
                ),
            );
            continue;
        };
        let mut set = CountrySet::new();
        for v in arr.iter() {
            match v.as_str().map(|c| (c, Country::parse(c))) {
                Some((_, Some(code))) => {
                    set.insert(code);
                }
                Some((c, None)) => {
                    if let Some(existing) = map.get(c) {
                        set.union_with(existing);
                    } else {
                        sink.error_help(
                            v.span().as_ref(),
                            format!(
                                "`{c}` is not a country code or a jurisdiction defined before it"
                            ),
                            "use ISO 3166-1 alpha-2 codes in upper case, e.g. `DE`",
                        );
                    }
                }
                None => sink.error(v.span().as_ref(), "country codes must be strings"),
            }
        }
        map.insert(name.value, set);
    }
    map
}
