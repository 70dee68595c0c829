"""Compliance profiles: the calling law of the callee's country or US state, as data.

A profile says when calls may start (a weekly window and a holiday calendar, read in the callee's zone or in its
``fixed_zone``), how often one person or one debt may be called (its :class:`Cap` s), how long to wait after a
conversation, which purposes of a call it binds, and where each rule comes from (:class:`RuleSource`: the
official text and the date it was read). A value that could not be confirmed from the official text is kept at its
conservative reading and its path is listed in ``unconfirmed``; an operator may replace any profile with their own.

- The built-in profiles are JSON files in ``compliance_profiles/`` next to this module, one per id, loaded once
  (:func:`builtin_profiles`).
- The operator's own profiles live in the ``compliance_profiles`` collection
  (:class:`shared.stores.compliance_profiles.ComplianceProfileStore`); :data:`REGISTRY` holds the profiles in force
  in this process: the built-ins, overridden (same id) or extended by the operator's.
- :func:`auto_profile_ids` is what ``call_settings.compliance: "auto"`` applies to one number and purpose
  (:data:`AUTO_TABLE`); :func:`us_state` finds a US number's state by its area code.

Every request shape is :class:`shared.domain.shapes.ComplianceProfileShape`; docs/compliance.md describes each
profile, its sources and what is unconfirmed. This module does no I/O but reading its own data files.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

import phonenumbers

from shared.domain.call_settings import CallSettings, InvalidCallSettings, parse_call_settings
from shared.domain.shapes import (
    CAP_OUTCOMES,
    CAP_SCOPES,
    COMPLIANCE_PURPOSES,
    PROFILE_ID_PATTERN,
    ComplianceProfileShape,
    validate_shape,
)
from shared.errors import ValidationError

__all__ = [
    "AREA_CODE_STATES", "AUTO_TABLE", "BUILTIN_IDS", "CAP_OUTCOMES", "CAP_SCOPES", "PROFILE_ID_PATTERN", "PURPOSES",
    "REGISTRY", "STORE_FIELDS", "AutoRule", "Cap", "ComplianceProfile", "InvalidProfile", "ProfileRegistry",
    "RuleSource", "auto_profile_ids", "builtin_profiles", "parse_profile", "us_state",
]

#: What a call is for (``call_settings.purpose``); a profile binds some of these.
PURPOSES = COMPLIANCE_PURPOSES
#: The built-in profiles' ids (one data file each).
BUILTIN_IDS = (
    "us-federal", "us-regf", "us-fl", "us-ok", "us-md", "us-ma", "us-wa", "us-tx", "us-la", "us-ms", "us-al",
    "us-ri", "us-pa", "cl-cobranza", "co-cobranza", "pe-cobranza", "mx-cobranza", "es-comercial",
)
#: Fields the store adds to an operator's profile (not part of the profile itself).
STORE_FIELDS = ("_id", "updated_at")
#: Package folder of the built-in profiles' data files.
_DATA = "compliance_profiles"


@dataclass(frozen=True, kw_only=True)
class Cap:
    """At most ``count`` calls in any ``days`` consecutive local days of the callee (1 = one local day), or in any
    ``hours`` hours (a rolling duration); exactly one of ``days`` and ``hours`` is set.

    :param per: ``"person"``: counted per number and per contact ``external_id``, each key on its own;
        ``"debt"``: per ``external_id`` only (per number when the contact has none).
    :param counts: the call outcomes counted (``answered``, ``voicemail``, ``no_answer``, ``busy``, ``failed_dial``,
        ``invalid_number``, ``timeout``, ``dropped``); None: every placed call.
    :param rule: how the rule is said, e.g. ``"1 call a week"``.
    """

    count: int
    days: int | None = None
    hours: int | None = None
    per: str = "person"
    counts: tuple[str, ...] | None = None
    rule: str = ""

    def counted(self, outcome: str | None) -> bool:
        """Whether a placed call with ``outcome`` counts against this cap (None: its outcome is not known yet, and
        it counts)."""
        return self.counts is None or outcome is None or outcome in self.counts


@dataclass(frozen=True, kw_only=True)
class RuleSource:
    """One rule of a profile: what it says, the official text it comes from, and the date that text was read."""

    rule: str
    source: str
    checked_on: str


@dataclass(frozen=True, kw_only=True)
class ComplianceProfile:
    """A validated compliance profile (see the module's docstring and docs/compliance.md).

    :param id: lowercase ``[a-z0-9-]``, 2-40 characters.
    :param version: bumped when a rule changes (>= 1).
    :param country: ISO 3166 alpha-2, upper case.
    :param subdivision: a state or region (``"FL"``), or None.
    :param purposes: the purposes (:data:`PURPOSES`) the profile binds.
    :param settings: the calling window (``windows``, ``holidays``) as call_settings; its ``timezone`` is
        ``fixed_zone`` or ``"UTC"``, a placeholder: the windows are read in the callee's zones unless ``fixed_zone``.
    :param fixed_zone: read the windows in this zone instead of the callee's (Mississippi: ``America/Chicago``).
    :param caps: limits on calls per person or per debt.
    :param quiet_days_after_conversation: no call on the day of a conversation and the N-1 days after it.
    :param rules: each rule with its official source.
    :param unconfirmed: paths of values not confirmed from the official text (``"caps[0].counts"``).
    :param builtin: shipped with outdial (False: the operator's own).
    :param document: the profile as stored and served (do not change it: :meth:`to_document` gives a copy).
    """

    id: str
    version: int
    name: str
    country: str
    subdivision: str | None
    purposes: tuple[str, ...]
    settings: CallSettings
    fixed_zone: str | None = None
    caps: tuple[Cap, ...] = ()
    quiet_days_after_conversation: int | None = None
    rules: tuple[RuleSource, ...] = ()
    unconfirmed: tuple[str, ...] = ()
    builtin: bool = True
    document: Mapping[str, Any]

    def binds(self, purpose: str) -> bool:
        """Whether the profile applies to calls made for ``purpose``."""
        return purpose in self.purposes

    def to_document(self) -> dict[str, Any]:
        """The profile as stored and served (a copy)."""
        return copy.deepcopy(dict(self.document))


class InvalidProfile(ValidationError):
    """A rejected compliance profile (a ``ValueError``); ``errors`` lists ``(field, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__(errors)
        self.args = ("invalid compliance profile: " + "; ".join(f"{f}: {m}" for f, m in self.errors),)


def parse_profile(raw: Any, *, builtin: bool = False) -> ComplianceProfile:
    """``raw`` (the JSON form) validated by :class:`shared.domain.shapes.ComplianceProfileShape`.

    :param builtin: the profile ships with outdial (default False: an operator's).
    :raises InvalidProfile: naming every bad field (``caps[0].days``) and why.
    """
    shape = validate_shape(ComplianceProfileShape, raw)
    if isinstance(shape, list):
        raise InvalidProfile(shape)
    doc = shape.document()
    window: dict[str, Any] = {"timezone": doc["fixed_zone"] or "UTC"}
    if doc["windows"] is not None:
        window["windows"] = doc["windows"]
    if doc["holidays"] is not None:
        window["holidays"] = doc["holidays"]
    try:
        settings = parse_call_settings(window)
    except InvalidCallSettings as exc:   # pragma: no cover - the shape checked the same fields with the same rules
        raise InvalidProfile([("fixed_zone" if f == "timezone" else f, m) for f, m in exc.errors]) from None
    return ComplianceProfile(
        id=doc["id"], version=doc["version"], name=doc["name"], country=doc["country"],
        subdivision=doc["subdivision"], purposes=tuple(doc["purposes"]), settings=settings,
        fixed_zone=doc["fixed_zone"],
        caps=tuple(Cap(count=c["count"], days=c["days"], hours=c["hours"], per=c["per"],
                       counts=None if c["counts"] is None else tuple(c["counts"]), rule=c["rule"])
                   for c in doc["caps"]),
        quiet_days_after_conversation=doc["quiet_days_after_conversation"],
        rules=tuple(RuleSource(**r) for r in doc["rules"]),
        unconfirmed=tuple(doc["unconfirmed"]), builtin=builtin, document=doc)


@cache
def builtin_profiles() -> Mapping[str, ComplianceProfile]:
    """The built-in profiles by id, read once from this package's data files.

    :raises RuntimeError: a data file that does not parse, or whose id is not its file name.
    """
    folder = resources.files(__package__ or "shared.domain").joinpath(_DATA)
    found: dict[str, ComplianceProfile] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            profile = parse_profile(json.loads(entry.read_text(encoding="utf-8")), builtin=True)
        except (ValueError, InvalidProfile) as exc:
            raise RuntimeError(f"the built-in compliance profile {entry.name} is invalid: {exc}") from None
        if f"{profile.id}.json" != entry.name:
            raise RuntimeError(f"the built-in compliance profile {entry.name} has the id {profile.id!r}")
        found[profile.id] = profile
    return MappingProxyType(dict(sorted(found.items())))


class ProfileRegistry:
    """The profiles in force in one process: the built-ins, overridden (same id) or extended by the operator's.

    :meth:`install` replaces the operator's profiles at once (thread-safe); readers take the current snapshot, a
    dict that is never changed once published.

    :param builtins: returns the built-in profiles (default :func:`builtin_profiles`).
    """

    def __init__(self, builtins: Callable[[], Mapping[str, ComplianceProfile]] = builtin_profiles) -> None:
        self._builtins = builtins
        self._lock = threading.Lock()
        self._operator: Mapping[str, ComplianceProfile] = {}
        self._merged: Mapping[str, ComplianceProfile] | None = None
        self._problems: tuple[tuple[str, str], ...] = ()

    def _snapshot(self) -> Mapping[str, ComplianceProfile]:
        merged = self._merged
        if merged is None:
            with self._lock:
                if self._merged is None:
                    self._merged = {**self._builtins(), **self._operator}
                merged = self._merged
        return merged

    def get(self, profile_id: str) -> ComplianceProfile | None:
        """The profile in force with this id, or None."""
        return self._snapshot().get(profile_id)

    def all(self) -> list[ComplianceProfile]:
        """Every profile in force, by id."""
        return sorted(self._snapshot().values(), key=lambda p: p.id)

    def overridden(self, profile_id: str) -> bool:
        """Whether an operator's profile replaces the built-in one with this id."""
        profile = self.get(profile_id)
        return profile is not None and not profile.builtin and profile_id in self._builtins()

    def install(self, operator_docs: Iterable[Mapping[str, Any]]) -> None:
        """Replace the operator's profiles with ``operator_docs`` (documents as the store keeps them: its ``_id``
        and ``updated_at`` are left aside). A document that no longer parses is skipped and reported by
        :meth:`problems`; the built-in profile of its id, if any, stays in force."""
        operator: dict[str, ComplianceProfile] = {}
        problems: list[tuple[str, str]] = []
        for doc in operator_docs:
            key = str(doc.get("_id", doc.get("id", "?")))[:60]
            try:
                profile = parse_profile({k: v for k, v in doc.items() if k not in STORE_FIELDS})
            except InvalidProfile as exc:
                problems.append((key, "; ".join(f"{f}: {m}" for f, m in exc.errors)))
                continue
            if "_id" in doc and doc["_id"] != profile.id:
                problems.append((key, f"is stored under another id than its own ({profile.id!r})"))
                continue
            operator[profile.id] = profile
        merged = {**self._builtins(), **operator}
        with self._lock:
            self._operator = operator
            self._merged = merged
            self._problems = tuple(problems)

    def problems(self) -> list[tuple[str, str]]:
        """``(profile id, what is wrong)`` of each operator's document the last :meth:`install` skipped."""
        return list(self._problems)


#: The profiles in force in this process.
REGISTRY = ProfileRegistry()


# --- which profiles "auto" applies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoRule:
    """One row of :data:`AUTO_TABLE`: numbers of ``country`` (and, when set, of the US state ``subdivision``) get
    ``profile`` for every purpose the profile in force binds."""

    country: str
    subdivision: str | None
    profile: str


#: What ``call_settings.compliance: "auto"`` applies: a number's country (and, in the US, its state by area code)
#: chooses these rows, and of each row the profile applies when its purposes include the call's purpose.
AUTO_TABLE: tuple[AutoRule, ...] = (
    AutoRule("US", None, "us-federal"),
    AutoRule("US", None, "us-regf"),
    *(AutoRule("US", state, f"us-{state.lower()}")
      for state in ("FL", "OK", "MD", "MA", "WA", "TX", "LA", "MS", "AL", "RI", "PA")),
    AutoRule("CL", None, "cl-cobranza"),
    AutoRule("CO", None, "co-cobranza"),
    AutoRule("PE", None, "pe-cobranza"),
    AutoRule("MX", None, "mx-cobranza"),
    AutoRule("ES", None, "es-comercial"),
)


def auto_profile_ids(phone: str, purpose: str, *, region: str = "CL",
                     registry: ProfileRegistry | None = None) -> tuple[str, ...]:
    """The profiles ``"auto"`` applies to a call to ``phone`` made for ``purpose``, in :data:`AUTO_TABLE`'s order.

    :param phone: the number (E.164, or national in ``region``); one that does not parse gets none.
    :param region: the region of a national number (default ``"CL"``; pass ``PHONE_DEFAULT_REGION``).
    :param registry: the profiles in force (default :data:`REGISTRY`): a row applies when its profile's purposes
        include ``purpose``.
    :raises ValueError: ``purpose`` is not one of :data:`PURPOSES`.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r} (known: {', '.join(PURPOSES)})")
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return ()
    country = phonenumbers.region_code_for_number(number)
    if country is None:
        return ()
    state = us_state(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)) \
        if country == "US" else None
    profiles = registry or REGISTRY
    chosen: list[str] = []
    for row in AUTO_TABLE:
        if row.country != country or row.subdivision not in (None, state):
            continue
        profile = profiles.get(row.profile)
        if profile is not None and profile.binds(purpose):
            chosen.append(row.profile)
    return tuple(chosen)


# --- a US number's state ---------------------------------------------------------------------------------------------

#: The geographic area codes of each US state (and DC), from the North American Numbering Plan's assignments as the
#: phonenumbers package's geocoder carries them (version 9.0); non-geographic codes (800, 888...) and the codes of
#: Canada, the Caribbean and the US territories (which have their own region codes) are not listed.
_STATE_AREA_CODES = {
    "AK": "907", "AL": "205 251 256 334 659 938", "AR": "327 479 501 870", "AZ": "480 520 602 623 928",
    "CA": "209 213 279 310 323 341 350 369 408 415 424 442 510 530 559 562 619 626 628 650 657 661 669 707 714 738 "
          "747 760 805 818 820 831 840 858 909 916 925 949 951",
    "CO": "303 719 720 748 970 983", "CT": "203 475 860 959", "DC": "202 771", "DE": "302",
    "FL": "239 305 321 324 352 386 407 448 561 645 656 689 727 728 754 772 786 813 850 863 904 941 954",
    "GA": "229 404 470 478 678 706 762 770 912 943", "HI": "808", "IA": "319 515 563 641 712", "ID": "208 986",
    "IL": "217 224 309 312 331 447 464 618 630 708 730 773 779 815 847 872",
    "IN": "219 260 317 463 574 765 812 930", "KS": "316 620 785 913", "KY": "270 364 502 606 859",
    "LA": "225 318 337 504 985", "MA": "339 351 413 508 617 774 781 857 978", "MD": "227 240 301 410 443 667",
    "ME": "207", "MI": "231 248 269 313 517 586 616 734 810 906 947 989", "MN": "218 320 507 612 651 763 952",
    "MO": "235 314 417 557 573 636 660 816 975", "MS": "228 601 662 769", "MT": "406",
    "NC": "252 336 472 704 743 828 910 919 980 984", "ND": "701", "NE": "308 402 531", "NH": "603",
    "NJ": "201 551 609 640 732 848 856 862 908 973", "NM": "505 575", "NV": "702 725 775",
    "NY": "212 315 329 332 347 363 516 518 585 607 631 646 680 716 718 838 845 914 917 929 934",
    "OH": "216 220 234 283 326 330 380 419 440 513 567 614 740 937", "OK": "405 539 572 580 918",
    "OR": "458 503 541 971", "PA": "215 223 267 272 412 445 484 570 582 610 717 724 814 835 878", "RI": "401",
    "SC": "803 821 839 843 854 864", "SD": "605", "TN": "423 615 629 731 865 901 931",
    "TX": "210 214 254 281 325 346 361 409 430 432 469 512 682 713 726 737 806 817 830 832 903 915 936 940 945 956 "
          "972 979",
    "UT": "385 435 801", "VA": "276 434 540 571 686 703 757 804 826 948", "VT": "802",
    "WA": "206 253 360 425 509 564", "WI": "262 274 353 414 534 608 715 920", "WV": "304 681", "WY": "307",
}
#: A US area code's state (two letters).
AREA_CODE_STATES: Mapping[str, str] = MappingProxyType(
    {code: state for state, codes in _STATE_AREA_CODES.items() for code in codes.split()})


def us_state(phone: str) -> str | None:
    """The US state (two letters, ``"DC"`` for Washington, D.C.) of an E.164 ``+1`` number by its area code; None
    for a number of another country, a non-geographic code (800...) or a code of Canada or the Caribbean."""
    text = phone.strip() if isinstance(phone, str) else ""
    if len(text) != 12 or not text.startswith("+1") or not text[1:].isdigit():
        return None
    return AREA_CODE_STATES.get(text[2:5])
