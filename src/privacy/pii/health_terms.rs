//! The curated vocabulary of the health check (see `health` for how it is
//! applied): terms with their match kind, the word lists of the documented
//! exceptions, and the automaton that finds candidate words in one pass.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Anywhere inside the word.
    Stem,
    /// At the start of the word.
    Start,
    /// The whole word.
    Whole,
}

use Kind::{Start, Stem, Whole};

pub(crate) const TERMS: &[(&str, Kind)] = &[
    // Mobility and aids
    ("rollstuhl", Stem),
    ("rolli", Start),
    ("rollator", Stem),
    ("gehhilfe", Stem),
    ("krücke", Stem),
    ("unterarmgehstütze", Stem),
    ("orthese", Stem),
    ("prothese", Stem),
    ("gips", Whole),
    ("lähmung", Stem),
    ("gelähmt", Stem),
    ("spastik", Stem),
    ("spastisch", Stem),
    ("parese", Stem),
    ("beinschiene", Stem),
    ("armschiene", Stem),
    ("handschiene", Stem),
    ("beinbruch", Stem),
    ("armbruch", Stem),
    ("knochenbruch", Stem),
    ("fraktur", Stem),
    ("verstauch", Stem),
    ("prellung", Stem),
    ("gehirnerschütterung", Stem),
    // Disability
    ("schwerbehindert", Stem),
    ("körperbehindert", Stem),
    ("sehbehindert", Stem),
    ("hörbehindert", Stem),
    ("mehrfachbehindert", Stem),
    ("lernbehindert", Stem),
    ("geistigbehindert", Stem),
    ("merkzeichen", Start),
    ("pflegegrad", Stem),
    ("pflegestufe", Stem),
    ("pflegebedürft", Stem),
    ("blind", Start),
    ("erblind", Stem),
    ("gehörlos", Stem),
    ("schwerhörig", Stem),
    ("hörgerät", Stem),
    ("cochlea", Stem),
    ("implantat", Stem),
    ("sehschwäch", Stem),
    ("inkontinen", Stem),
    ("syndrom", Stem),
    ("trisomie", Stem),
    ("autis", Stem),
    ("adhs", Whole),
    ("legasthen", Stem),
    ("dyskalkul", Stem),
    // Conditions
    ("epilep", Stem),
    ("krampfanf", Stem),
    ("anfallsleiden", Stem),
    ("diabet", Stem),
    ("insulin", Stem),
    ("asthma", Stem),
    ("allergi", Stem),
    ("anaphyla", Stem),
    ("autoinjektor", Stem),
    ("epipen", Stem),
    ("herzfehler", Stem),
    ("herzinfarkt", Stem),
    ("schlaganfall", Stem),
    ("infarkt", Stem),
    ("leukämie", Stem),
    ("tumor", Stem),
    ("mukoviszidose", Stem),
    ("sklerose", Stem),
    ("rheuma", Stem),
    ("zöliakie", Stem),
    ("neurodermitis", Stem),
    ("heuschnupfen", Stem),
    ("magen", Start),
    ("übelkeit", Stem),
    ("schmerz", Stem),
    ("grippe", Start),
    ("migräne", Stem),
    ("fieber", Start),
    ("schwanger", Stem),
    ("psychisch", Stem),
    ("psychiatr", Stem),
    ("depressi", Stem),
    ("angststörung", Stem),
    ("essstörung", Stem),
    ("entwicklungsstörung", Stem),
    ("verhaltensstörung", Stem),
    ("wahrnehmungsstörung", Stem),
    ("sprachstörung", Stem),
    ("krank", Stem),
    ("gesundheitlich", Stem),
    // Treatment
    ("diagnos", Stem),
    ("medikament", Stem),
    ("medikation", Stem),
    ("therap", Stem),
    ("chemo", Start),
    ("dialyse", Stem),
    ("attest", Stem),
    ("ärztlich", Stem),
    ("arzt", Stem),
    ("ärzt", Stem),
    ("klinik", Stem),
    ("reha", Start),
    ("notaufnahme", Stem),
    ("rettungswagen", Stem),
    ("medizinisch", Stem),
    ("operiert", Stem),
    ("operation", Whole),
];

/// Parts of compounds that describe a thing, not a person.
pub(crate) const THING_PARTS: &[&str] = &[
    "gerecht",
    "geeignet",
    "freundlich",
    "tauglich",
    "zugänglich",
    "stellpl",
    "parkpl",
    "rampe",
    "lift",
    "kasse",
    "versicherung",
    "fahrzeug",
];

/// Words that make "Behinderung" and "Diagnose" technical or traffic terms.
pub(crate) const TECHNICAL: &[&str] = &[
    "verkehr",
    "bauarbeit",
    "baustelle",
    "verspätung",
    "stau",
    "sperrung",
    "umleitung",
    "werkstatt",
    "motor",
    "fahrzeug",
    "technik",
    "fehler",
    "software",
    "reparatur",
    "defekt",
    "störung",
    "wagen",
    "gerät",
];

pub(crate) const PLACE_PARTS: &[&str] = &[
    "krankenhaus",
    "klinik",
    "reha",
    "ärztehaus",
    "zentrum",
    "praxis",
];

/// "den Arm gebrochen": verbs that make a body part an injury.
pub(crate) const INJURY_VERBS: &[&str] = &[
    "gebrochen",
    "verstaucht",
    "geprellt",
    "verrenkt",
    "ausgekugelt",
];

/// "Anfall", "Anfälle", "Krampfanfall"; not "anfallend".
pub(crate) const SEIZURE_ENDINGS: &[&str] = &["anfall", "anfalls", "anfälle", "anfällen"];

/// Every string a word must contain for `health::is_term` to accept it: the
/// terms, the disability and seizure words, "Förderschwerpunkt" and the
/// injury verbs. A word without any of them is not a term, so the full
/// check runs only on the words this automaton marks. Keep it in step with
/// `is_term` (the test `needles_cover_every_rule` guards it).
pub(crate) fn needles() -> &'static AhoCorasick {
    static NEEDLES: LazyLock<AhoCorasick> = LazyLock::new(|| {
        let words = TERMS
            .iter()
            .map(|(t, _)| *t)
            .chain(["behinder", "förderschwerpunkt"])
            .chain(SEIZURE_ENDINGS.iter().copied())
            .chain(INJURY_VERBS.iter().copied());
        AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .build(words)
            .expect("a few hundred fixed strings always build")
    });
    &NEEDLES
}
