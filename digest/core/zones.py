"""The time zones a reader can pick: today's canonical IANA names, grouped by region and
labelled in the reader's language, and the legacy names (`Asia/Calcutta`) mapped onto them.

The tz database keeps every name it ever had, so `available_timezones()` offers some 600 of them,
old and new side by side; CLDR (through Babel) knows which are current and what a person calls
each one ("Kolkata (India)"). Pure: the zone data is read, never written.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import available_timezones

from babel import Locale
from babel.core import get_global
from babel.dates import get_timezone_location

from digest.core.i18n import N_, translations

__all__ = [
    "UTC",
    "ZoneChoice",
    "ZoneGroup",
    "browser_aliases",
    "canonical_zone",
    "canonical_zones",
    "zone_groups",
]

UTC = "UTC"

# The tz database's regions, in the order a picker lists them, with what the group is called
# (in the catalogue: CLDR names continents but not the oceans, and one source reads evenly).
_REGIONS = {
    "Africa": N_("Africa"),
    "America": N_("Americas"),
    "Antarctica": N_("Antarctica"),
    "Arctic": N_("Arctic"),
    "Asia": N_("Asia"),
    "Atlantic": N_("Atlantic Ocean"),
    "Australia": N_("Australia"),
    "Europe": N_("Europe"),
    "Indian": N_("Indian Ocean"),
    "Pacific": N_("Pacific Ocean"),
}
_UTC_LABEL = N_("Coordinated Universal Time")
# CLDR's names for zero offset; a reader knows it as plain UTC, and so does DIGEST_TIMEZONE's
# default.
_UTC_NAMES = frozenset({"Etc/UTC", "Etc/GMT"})


@dataclass(frozen=True, slots=True)
class ZoneChoice:
    """One option of the picker: the IANA name stored, and what the reader reads."""

    value: str
    label: str


@dataclass(frozen=True, slots=True)
class ZoneGroup:
    """One region's zones (an `<optgroup>`), sorted by label."""

    region: str  # the tz database's region, `America`
    label: str  # what the group is called, `Americas`
    zones: tuple[ZoneChoice, ...]


def canonical_zone(name: str) -> str:
    """Today's name of the zone `name` (`Asia/Calcutta` → `Asia/Kolkata`, `Etc/UTC` → `UTC`);
    a current name, a name CLDR does not know (`EST5EDT`, `Mars/Base`), and one whose new name
    this machine's tz database is too old to have, come back as given."""
    current = _aliases().get(name, name)
    if current in _UTC_NAMES:
        return UTC
    return current if current in _here() else name


@lru_cache(maxsize=1)
def canonical_zones() -> tuple[str, ...]:
    """Every zone a reader can pick, sorted: CLDR's current `Region/City` names the tz database
    on this machine has, and UTC. No legacy alias (`US/Pacific`, `Asia/Calcutta`), no fixed
    offset (`Etc/GMT+5`) and no POSIX rule (`EST5EDT`)."""
    current = {
        zone
        for zone in get_global("zone_territories")
        if zone in _here() and zone.partition("/")[0] in _REGIONS and zone not in _aliases()
    }
    return tuple(sorted(current | {UTC}))


@lru_cache(maxsize=8)
def zone_groups(locale: str) -> tuple[ZoneGroup, ...]:
    """`canonical_zones()` by region, each labelled "City (Country)" in `locale` (CLDR's names)
    and sorted by that label, regions in the tz database's order, named in `locale`'s catalogue,
    and UTC last."""
    gettext = translations(locale).gettext
    place = Locale.parse(locale)
    by_region: dict[str, list[ZoneChoice]] = {region: [] for region in _REGIONS}
    for zone in canonical_zones():
        if zone != UTC:
            by_region[zone.partition("/")[0]].append(ZoneChoice(zone, _label(zone, place)))
    groups = [
        ZoneGroup(region, gettext(_REGIONS[region]), tuple(sorted(choices, key=_sort_key)))
        for region, choices in by_region.items()
        if choices
    ]
    groups.append(ZoneGroup(UTC, gettext(_UTC_LABEL), (ZoneChoice(UTC, "UTC"),)))
    return tuple(groups)


@lru_cache(maxsize=1)
def browser_aliases() -> dict[str, str]:
    """Legacy name → the canonical zone offered for it, for the picker's script: browsers name
    the zone they run in as ICU does, and ICU still says `Asia/Calcutta`."""
    offered = set(canonical_zones())
    pairs = {old: canonical_zone(old) for old in _aliases()}
    pairs.update({name: UTC for name in _UTC_NAMES})
    return {old: new for old, new in sorted(pairs.items()) if new in offered and old != new}


# --------------------------------------------------------------------------- private


@lru_cache(maxsize=1)
def _here() -> frozenset[str]:
    """The zones this machine's tz database has (read once: it walks a folder)."""
    return frozenset(available_timezones())


@lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    return dict(get_global("zone_aliases"))  # CLDR's legacy name → current name


def _label(zone: str, place: Locale) -> str:
    city = get_timezone_location(zone, place, return_city=True)
    territory = get_global("zone_territories").get(zone)
    country = place.territories.get(territory) if territory else None
    if not country:
        return str(city)
    if city in country:  # "Hong Kong SAR China", not "Hong Kong (Hong Kong SAR China)"
        return str(country)
    return f"{city} ({country})"


def _sort_key(choice: ZoneChoice) -> tuple[str, str]:
    # Accents aside, so Ürümqi sorts with the U's, not after Z.
    bare = unicodedata.normalize("NFKD", choice.label)
    return "".join(c for c in bare if not unicodedata.combining(c)).casefold(), choice.value
