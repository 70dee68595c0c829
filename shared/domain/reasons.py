"""Why a job or an attempt is where it is: a reason code with parameters, and the one table that says it in
English and Spanish.

Jobs store ``reason_code`` and ``reason_params`` (attempts likewise) next to ``last_error``, the text of the
configured language (``OUTDIAL_LANG``) kept for the API's compatibility and made from this table. Whatever
shows a reason (the API, the dashboard, the demo's report, the logs) reads the code and its parameters and
asks :func:`text` in the language it needs; nothing parses a reason's text. A parameter that is itself a
reason (``{"code": ..., "params": ...}``, e.g. ``last``: what ended the last round) is said in the same
language; ``outcome`` is said with :data:`OUTCOMES`. The codes are listed in ``docs/reasons.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Longest ``last_error`` kept, characters.
MAX_TEXT = 500
#: The languages of the table; any other language reads English.
LANGS = ("en", "es")

#: A call's outcome in words (English, Spanish), by :class:`shared.domain.outcomes.Outcome` value.
OUTCOMES: dict[str, tuple[str, str]] = {
    "answered": ("answered", "contestada"),
    "voicemail": ("voicemail", "buzón de voz"),
    "no_answer": ("no answer", "no contesta"),
    "busy": ("busy", "ocupado"),
    "failed_dial": ("dial failed", "falló el discado"),
    "invalid_number": ("invalid number", "número inválido"),
    "timeout": ("call exceeded max_call_duration", "llamada excedió la duración máxima"),
    "dropped": ("connected call dropped by a provider error", "llamada conectada cortada por un error del proveedor"),
    "provider_fault": ("provider fault", "falla del proveedor"),
    "account_problem": ("provider account cannot place calls", "la cuenta del proveedor no puede llamar"),
    "unsuccessful": ("conversation not successful", "conversación sin éxito"),
}


def _call_outcome(params: Mapping[str, Any], lang: str) -> str:
    words = OUTCOMES.get(str(params.get("outcome")), (str(params.get("outcome")),) * 2)
    text = words[1 if lang == "es" else 0]
    provider = params.get("provider")
    return f"{text} ({provider})" if provider else text


#: code -> (English, Spanish): a ``str.format`` template over the parameters, or a function of them.
TEXTS: dict[str, tuple[str | Callable[[Mapping[str, Any], str], str], ...]] = {
    # the round and its attempts
    "call_outcome": (_call_outcome, _call_outcome),
    "max_attempts": ("max attempts reached ({limit})", "máximo de intentos alcanzado ({limit})"),
    "max_attempts_after": ("max attempts reached ({limit}): {last}", "máximo de intentos alcanzado ({limit}): {last}"),
    "no_valid_phone": ("no valid phone number", "ningún número válido"),
    "no_valid_phone_after": ("no valid phone number: {last}", "ningún número válido: {last}"),
    "free_retries_spent": ("provider faults in a row, {used} free retries spent: {last}",
                           "fallas del proveedor seguidas, {used} reintentos gratuitos usados: {last}"),
    # the batch
    "batch_not_found": ("batch not found", "lote no encontrado"),
    "batch_cancelled": ("batch cancelled", "lote cancelado"),
    "legacy": ("{error}", "{error}"),
    "batch_held": ("batch held: {held}", "lote en espera: {held}"),
    "batch_held_by_provider": ("batch held: by the provider", "lote en espera: por el proveedor"),
    "batch_status": ("batch {status}", "lote {status}"),
    "settings_invalid": ("batch call_settings invalid: {error}", "call_settings del lote inválidos: {error}"),
    # the calling window and the contact policy
    "outside_window": ("{why}", "{why}"),
    "window_closing": ("window closes within {seconds:g} s: {why}",
                       "la ventana cierra en menos de {seconds:g} s: {why}"),
    "window_closes_before_provider": ("window closes before the provider would receive the call: {why}",
                                      "la ventana cierra antes de que el proveedor reciba la llamada: {why}"),
    "no_window": ("{error}; set the contact's timezone", "{error}; indique la zona horaria del contacto"),
    "contact_policy": ("contact policy: {why}", "política de contacto: {why}"),
    "compliance": ("{profile}: {why}", "{profile}: {why}"),
    "contact_in_progress": ("contact policy: a call to this person is in progress",
                            "política de contacto: hay una llamada en curso a esta persona"),
    "contact_policy_no_window": ("{why}; {error}", "{why}; {error}"),
    # do-not-call lists
    "do_not_call": ("do not call", "no llamar"),
    "dnc_round_end": ("the remaining numbers of the round are on the do-not-call list",
                      "los números que quedan en la ronda están en la lista de no llamar"),
    "dnc_number": ("the number is on a do-not-call list", "el número está en una lista de no llamar"),
    # what the conversation's analysis decided (call_settings.after_call)
    "awaiting_analysis": ("waiting for the conversation's analysis", "esperando el análisis de la conversación"),
    "analysis_never_came": ("conversation; its analysis never came", "conversación; su análisis nunca llegó"),
    "callback_scheduled": ("call back at {local} as asked ({asked})",
                           "volver a llamar el {local} como se pidió ({asked})"),
    "opted_out": ("asked not to be called again", "pidió no ser llamado de nuevo"),
    "wrong_person": ("the agent reached the wrong person", "el agente habló con la persona equivocada"),
    # balance
    "insufficient_balance": ("insufficient balance", "saldo insuficiente"),
    "unknown_account": ("account not found", "cuenta no encontrada"),
    "held_by_calls": ("the balance left is held by calls in progress; dialing again in a moment",
                      "el saldo restante está retenido por llamadas en curso; se marcará de nuevo en un momento"),
    # this dialer's own guards
    "no_slot": ("no free provider slot", "no hay un canal libre del proveedor"),
    "slots_rebuilding": ("provider slots being rebuilt", "canales del proveedor en reconstrucción"),
    "clock_untrusted": ("the shared time is not known closely enough (PIPELINE_MAX_SKEW_MS)",
                        "la hora compartida no se conoce con suficiente precisión (PIPELINE_MAX_SKEW_MS)"),
    "lease_too_short": ("the lease ends in {left:.1f} s, before the create could be answered ({need:.1f} s)",
                        "el lease termina en {left:.1f} s, antes de que el create pueda responderse ({need:.1f} s)"),
    # the provider
    "invalid_destination": ("invalid number: {error}", "número inválido: {error}"),
    "provider_refused": ("the provider refused the call: {error}", "el proveedor rechazó la llamada: {error}"),
    "provider_refused_caller_id": ("the provider refused the batch's caller id: {error}",
                                   "el proveedor rechazó el número de origen del lote: {error}"),
    "provider_refused_agent": ("the provider refused the batch's agent: {error}",
                               "el proveedor rechazó el agente del lote: {error}"),
    "provider_said": ("{error}", "{error}"),
    "provider_error": ("provider error: {error}", "error del proveedor: {error}"),
    "create_unknown_past_deadline": ("create outcome unknown past the deadline: {why}",
                                     "resultado del create desconocido pasado el plazo: {why}"),
    "create_unknown_no_call": ("create outcome unknown; no call found at the provider",
                               "resultado del create desconocido; el proveedor no tiene la llamada"),
    "lookup_failed": ("its call could not be looked up: {error}", "no se pudo consultar su llamada: {error}"),
    "provider_did_not_create": ("provider did not create the call", "el proveedor no creó la llamada"),
    "dial_interrupted_before_attempt": ("dial interrupted before an attempt was chosen",
                                        "discado interrumpido antes de elegir un intento"),
    "dial_interrupted_before_record": ("dial interrupted before the attempt was recorded",
                                       "discado interrumpido antes de registrar el intento"),
    "dial_interrupted_before_provider": ("dial interrupted before the provider was called",
                                         "discado interrumpido antes de llamar al proveedor"),
    "not_placed": ("not placed", "no realizado"),
    "not_sent": ("not sent: {why}", "no enviado: {why}"),
    # a text stored before reason codes (or by a caller that has only text)
    "text": ("{text}", "{text}"),
}


@dataclass(frozen=True)
class Reason:
    """A reason code and its parameters (plain values, or nested reasons as ``{"code", "params"}``)."""

    code: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def text(self, lang: str = "en") -> str:
        """The reason said in ``lang``."""
        return text(self.code, self.params, lang)

    def to_document(self) -> dict[str, Any]:
        """``{"code", "params"}``: this reason as a parameter of another."""
        return {"code": self.code, "params": dict(self.params)}

    def fields(self, lang: str = "en") -> dict[str, Any]:
        """What a job or an attempt stores: ``reason_code``, ``reason_params`` and ``last_error`` (the text in
        ``lang``, clipped to :data:`MAX_TEXT`)."""
        return {"reason_code": self.code, "reason_params": dict(self.params), "last_error": clip(self.text(lang))}


def because(code: str, **params: Any) -> Reason:
    """``Reason(code, params)``; a :class:`Reason` given as a parameter is stored as ``{"code", "params"}``."""
    return Reason(code, {k: v.to_document() if isinstance(v, Reason) else v for k, v in params.items()})


def clip(text_: str) -> str:
    """``text_`` cut to the longest ``last_error`` kept."""
    return text_ if len(text_) <= MAX_TEXT else text_[: MAX_TEXT - 1] + "…"


def _say(value: Any, lang: str) -> Any:
    if isinstance(value, Mapping) and "code" in value:
        return text(str(value["code"]), value.get("params") or {}, lang)
    return value


def text(code: str, params: Mapping[str, Any] | None = None, lang: str = "en") -> str:
    """The reason ``code`` with ``params`` said in ``lang`` (``en``, ``es``; other languages read English). An
    unknown code (written by a newer version) is shown as itself."""
    entry = TEXTS.get(code)
    if entry is None:
        return code
    template = entry[1 if lang == "es" else 0]
    values = {k: _say(v, lang) for k, v in (params or {}).items()}
    if callable(template):
        return template(values, lang)
    try:
        return template.format_map(values)
    except (KeyError, ValueError, TypeError):
        return code


#: What :func:`headline` says for a code, without its numbers and details (English, Spanish).
HEADLINES: dict[str, tuple[str, str]] = {
    "max_attempts": ("max attempts reached", "máximo de intentos alcanzado"),
    "max_attempts_after": ("max attempts reached", "máximo de intentos alcanzado"),
    "no_valid_phone_after": ("no valid phone number", "ningún número válido"),
    "free_retries_spent": ("provider faults in a row", "fallas del proveedor seguidas"),
}


def headline(reason: Reason, lang: str = "en") -> str:
    """The reason without its counts and the provider's word, to group many jobs by: ``"max attempts reached:
    busy"`` for ``max_attempts_after`` with ``limit`` 5 and a last call ``busy (dial_busy)``."""
    if reason.code == "call_outcome":
        return _call_outcome({**reason.params, "provider": None}, lang)
    words = HEADLINES.get(reason.code)
    if words is None:
        return reason.text(lang)
    said = words[1 if lang == "es" else 0]
    last = reason.params.get("last")
    if isinstance(last, Mapping) and "code" in last:
        return f"{said}: {headline(Reason(str(last['code']), last.get('params') or {}), lang)}"
    return said


def of(doc: Mapping[str, Any] | None) -> Reason | None:
    """The reason a stored job or attempt carries: its ``reason_code`` and ``reason_params``, or, for one
    written before reason codes, its ``last_error`` (``error`` for an attempt) as ``text``; None when none."""
    if not doc:
        return None
    if doc.get("reason_code"):
        return Reason(str(doc["reason_code"]), doc.get("reason_params") or {})
    stored = doc.get("last_error") or doc.get("error")
    return Reason("text", {"text": str(stored)}) if stored else None


def shown(doc: Mapping[str, Any] | None, lang: str = "en") -> str | None:
    """A stored job's or attempt's reason said in ``lang`` (None when it has none)."""
    reason = of(doc)
    return reason.text(lang) if reason is not None else None
