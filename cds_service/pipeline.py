"""One hook call, stage by stage: request -> prefetch -> FHIR record -> facts -> rules -> cards.

Framework-free: the HTTP layer hands in a decoded body and gets back a status and a body. The CLI
(``evaluate``) and the benchmark call the same code in process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests

from cds_service import deadline
from cds_service.clock import Clock
from cds_service.config import Settings
from cds_service.facts.extract import FactExtractor
from cds_service.facts.model import PatientFacts
from cds_service.facts.orders import draft_entries, selected_orders
from cds_service.fhir.record import read_patient_record
from cds_service.fhir.relevance import RelevanceFilter
from cds_service.knowledge.loader import ORDER_HOOKS, Knowledge, ServiceSpec
from cds_service.logs import log_event
from cds_service.prefetch.fhir_client import FetchLimits
from cds_service.prefetch.resolver import KeyFailure, resolve_prefetch
from cds_service.render.cards import RenderContext, RenderedCard, render_cards
from cds_service.render.links import add_timeline_link
from cds_service.render.timeline import load_spec
from cds_service.rules.evaluate import RuleMatch, evaluate
from cds_service.snooze import SnoozeOutcome, Snoozer, decision_key
from cds_service.storage.db import Database, IssuedCard
from cds_service.validation.request import HookRequest, RequestError, parse_hook_request
from cds_service.validation.response import check_response

log = logging.getLogger(__name__)


class PrefetchUnavailable(Exception):
    def __init__(self, failures: list[KeyFailure]) -> None:
        super().__init__(", ".join(f.key for f in failures))
        self.failures = failures


@dataclass
class HookResult:
    body: dict[str, Any]
    cards: list[RenderedCard]
    facts: PatientFacts
    timings_ms: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    fetched_keys: list[str] = field(default_factory=list)
    snoozed: list[str] = field(default_factory=list)  # recommendation ids hidden by a snooze
    snooze_returned: list[str] = field(default_factory=list)  # critical, back on new evidence
    # the issued cards could not be recorded (database down): the cards were still answered
    bookkeeping_skipped: bool = False


def orders_to_review(hook: str, request: HookRequest) -> tuple[str, ...]:
    """order-select reviews what the clinician selected; order-sign reviews every draft order,
    since all of them are about to be signed (the hook has no ``selections``)."""
    if hook == "order-sign":
        return tuple(dict.fromkeys(e.reference for e in draft_entries(request.draft_orders)))
    return request.selections


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        knowledge: Knowledge,
        clock: Clock,
        session: requests.Session,
        executor: Executor,
        database: Database | None,
        pseudonym_key: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.knowledge = knowledge
        self.clock = clock
        self.session = session
        self.executor = executor
        self.database = database
        self.snoozer = (Snoozer(database, knowledge, pseudonym_key)
                        if database is not None and pseudonym_key else None)
        self.extractor = FactExtractor(knowledge)
        self.relevant = RelevanceFilter(knowledge)
        self.limits = FetchLimits(
            max_pages=settings.fhir_max_pages,
            max_bytes=int(settings.fhir_max_response_mb * 1024 * 1024),
        )

    def service(self, service_id: str) -> ServiceSpec:
        try:
            return self.knowledge.services[service_id]
        except KeyError as exc:
            raise RequestError(404, "unknown-service", "no CDS service with this id") from exc

    def call(self, service_id: str, body: Any) -> HookResult:
        marks = [time.perf_counter()]
        timings: dict[str, float] = {}

        def lap(name: str) -> None:
            marks.append(time.perf_counter())
            timings[name] = round((marks[-1] - marks[-2]) * 1000, 3)

        service = self.service(service_id)
        request = parse_hook_request(service.id, service.hook, body)
        lap("validate")
        prefetch = resolve_prefetch(
            service, request,
            session=self.session, executor=self.executor,
            budget_seconds=self.settings.fhir_budget_seconds, limits=self.limits,
            require_https=self.settings.fhir_require_https,
        )
        lap("prefetch")
        if prefetch.failed:
            raise PrefetchUnavailable(prefetch.failures)
        now = self.clock()
        with deadline.budget(self.settings.compute_budget_seconds):
            record = read_patient_record(
                prefetch.values.values(), request.patient_id, self.relevant
            )
            lap("read")
            facts = self.extractor.extract(record, now)
            orders = (
                selected_orders(request.draft_orders, orders_to_review(service.hook, request),
                                request.patient_id, self.knowledge)
                if service.hook in ORDER_HOOKS
                else []
            )
        lap("facts")
        matches = evaluate(self.knowledge, service.hook, facts, orders)
        lap("rules")
        patient = (self.snoozer.pseudonym(request.patient_id, request.fhir_server)
                   if self.snoozer is not None else None)
        snoozes = (self.snoozer.apply(patient, matches, now)
                   if self.snoozer is not None and patient is not None
                   else SnoozeOutcome(list(matches)))
        matches = snoozes.kept
        lap("snooze")
        rendered = self._render(
            matches,
            RenderContext(request.patient_id, request.user_id, request.encounter_id, now,
                          public_base_url=self.settings.public_base_url,
                          hook=service.hook),
            snoozes.returned,
        )
        body_out: dict[str, Any] = {"cards": [r.card for r in rendered]}
        lap("render")
        if self.settings.validate_responses:
            check_response(body_out)
        lap("check")
        recorded = True
        if self.database is not None and self.settings.record_issued_cards and rendered:
            recorded = self._record(service.id, service.hook, rendered, matches, patient, now)
        lap("record")
        counts = record.stats.as_fields()
        counts["cards"] = len(rendered)
        counts["fetched_pages"] = prefetch.fetched_pages
        if snoozes.snoozed or snoozes.returned:
            counts["snoozed"] = len(snoozes.snoozed)
            counts["snooze_returned"] = len(snoozes.returned)
        if prefetch.truncated_keys:
            log_event(log, "search results incomplete: using the pages that could be read",
                      logging.WARNING, keys=prefetch.truncated_keys)
        return HookResult(
            body=body_out,
            cards=rendered,
            facts=facts,
            timings_ms=timings,
            counts=counts,
            fetched_keys=[k for k, s in prefetch.sources.items() if s == "fetched"],
            snoozed=snoozes.snoozed,
            snooze_returned=list(snoozes.returned),
            bookkeeping_skipped=not recorded,
        )

    def _render(self, matches: list[RuleMatch], ctx: RenderContext,
                returned_notes: Mapping[str, str] | None = None) -> list[RenderedCard]:
        """Cards from the matches, as every caller shows them: a snoozed critical card shown
        again says so first, and patient-view cards open the timeline app."""
        rendered = render_cards(matches, self.knowledge, ctx)
        for card in rendered:
            note = (returned_notes or {}).get(card.recommendation_id)
            if note:
                card.card["detail"] = f"{note}\n\n{card.card['detail']}"
        if ctx.hook == "patient-view":
            label = load_spec(self.settings.cards_dir).smart_link_label
            add_timeline_link((r.card for r in rendered), self.settings.public_base_url, label)
        return rendered

    def patient_view_from_resources(
        self, patient_id: str, resources: list[Any]
    ) -> tuple[PatientFacts, list[RenderedCard]]:
        """The patient-view pathway over resources a SMART app read with the user's token.

        Same stages as :meth:`call` after prefetch (read, facts, rules, render, check), so the
        app shows exactly the cards a patient-view hook would return. Nothing is recorded as
        issued: these cards were shown by the app, not by the EHR."""
        hook = "patient-view"
        now = self.clock()
        with deadline.budget(self.settings.compute_budget_seconds):
            record = read_patient_record(resources, patient_id, self.relevant)
            facts = self.extractor.extract(record, now)
        matches = evaluate(self.knowledge, hook, facts, [])
        rendered = self._render(matches, RenderContext(
            patient_id, None, None, now, public_base_url=self.settings.public_base_url, hook=hook))
        if self.settings.validate_responses:
            check_response({"cards": [r.card for r in rendered]})
        return facts, rendered

    def _record(self, service_id: str, hook: str, rendered: list[RenderedCard],
                matches: list[RuleMatch], patient: str | None, now: datetime) -> bool:
        try:
            self.database.record_issued(  # type: ignore[union-attr]
                IssuedCard(
                    r.card["uuid"], service_id, r.recommendation_id, r.card["indicator"], now,
                    patient_pseudonym=patient,
                    decision_key=decision_key(patient, m, hook, now) if patient else None,
                    evidence=(self.snoozer.evidence(m).to_json()
                              if self.snoozer is not None and patient else None),
                )
                for r, m in zip(rendered, matches, strict=True)
            )
        except Exception as exc:  # the cards matter more than their bookkeeping
            # No traceback: a driver's message may quote parameters (card ids are harmless,
            # but nothing from the request should reach the logs by accident).
            log_event(log, "bookkeeping skipped: issued cards not recorded", logging.ERROR,
                      error=type(exc).__name__, cards=len(rendered))
            return False
        return True
