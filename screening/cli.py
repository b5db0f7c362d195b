"""Commands of ``screening``: ``medscreen screening evaluate|train|register|simulate|calibrate|assign|unassign|assignments|build-icd10-map|build-orphan-table``
and ``medscreen screen-emr INPUT --out flags.ndjson`` (batch screening of a population extract)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.orm import Session

    from screening.tables import ScreeningAssignment

__all__ = ["add_commands"]

logger = logging.getLogger(__name__)

DEFAULT_PREVALENCE = 1 / 500


def _knowledge() -> tuple[Any, Any, Any]:
    from screening.findings import load_code_maps
    from screening.knowledge import build_knowledge_base
    from screening.ontology import load_ontology

    ontology = load_ontology()
    return ontology, build_knowledge_base(ontology), load_code_maps(ontology)


def _print_report(summary: dict[str, Any]) -> None:
    print(
        f"{summary['n_cohorts']} gene cohorts held out whole in {summary['folds']} folds; prevalence "
        f"1:{round(1 / summary['prevalence'])}, alert budget {summary['alert_budget']:g} flags per child"
    )
    goal = summary["goal"]
    rates = sorted({summary["alert_budget"], goal["flag_rate"]})
    print(f"intervals: {summary['intervals']}")
    print(
        f"{'projection':26s}{'cases':>6s}"
        + "".join(f"{f'sens@{r:.1%}':>11s}{'95% CI':>11s}" for r in rates)
        + f"{'AUPRC':>7s}{'ROC':>7s}{'sens@thr':>9s}{'95% CI':>11s}{'flags':>7s}"
    )
    for name, p in summary["projections"].items():
        at = p["at_fold_thresholds"]
        low, high = at["sensitivity_95ci_by_cohort"]
        print(
            f"{name:26s}{p['n_cases']:6d}{_at_rates(p['sensitivity_at_flag_rate'], rates)}"
            f"{p['auprc']:7.3f}{p['roc_auc']:7.3f}{at['sensitivity']:9.3f}{f'{low:.2f}-{high:.2f}':>11s}{at['control_flag_rate']:7.3f}"
        )
    # The count of every finding credits the screener with what the commonplace list does; the count of the
    # informative findings (the screener's feature 0, no training) is the baseline it has to beat.
    print("baselines, at the same flag rates (ties split): counting every finding; counting the informative findings "
          "(commonplace childhood illness left out); the screener minus the latter (paired 95% CI)")
    print(
        f"{'projection':26s}" + "".join(f"{f'all@{r:.1%}':>9s}" for r in rates)
        + "".join(f"{f'inform@{r:.1%}':>13s}{'95% CI':>11s}" for r in rates)
        + "".join(f"{f'diff@{r:.1%}':>11s}{'95% CI':>17s}" for r in rates)
    )
    for name, p in summary["projections"].items():
        every = p["baseline_finding_count"]["sensitivity_at_flag_rate"]
        gaps = p["screener_minus_informative_count"]
        line = f"{name:26s}" + "".join(f"{every[f'{r:g}']['sensitivity']:9.3f}" for r in rates)
        line += _at_rates(p["baseline_informative_count"]["sensitivity_at_flag_rate"], rates, width=13)
        for r in rates:
            gap = gaps[f"{r:g}"]
            lo, hi = gap["difference_95ci"]
            line += f"{gap['difference']:+11.3f}{f'{lo:+.3f} to {hi:+.3f}':>17s}"
        print(line)
    print(
        f"headline (worst projection, {summary['headline_projection']}): sensitivity at budget "
        f"{summary['sensitivity_at_budget']:.3f}; counting findings {summary['baseline_finding_count_sensitivity_at_budget']:.3f}; "
        f"counting informative findings {summary['baseline_informative_count_sensitivity_at_budget']:.3f}"
    )
    below = summary["below_informative_count"]
    if below:
        print("the count of informative findings finds more cases than the screener in: " + "; ".join(
            f"{b['projection']} at {b['flag_rate'] * 100:g}% flags ({b['informative_count']:.3f} vs {b['screener']:.3f}, "
            f"difference {b['difference']:+.3f}, 95% CI {b['difference_95ci'][0]:+.3f} to {b['difference_95ci'][1]:+.3f})"
            for b in below
        ))
    else:
        print("the screener finds at least as many cases as the count of informative findings in every projection")
    print(
        f"goal: sensitivity >= {goal['sensitivity']:g} at <= {goal['flag_rate']:.1%} flags in every projection: "
        f"{'met' if summary['goal_met'] else 'NOT met'} (worst, {summary['headline_projection_at_goal_flag_rate']}: "
        f"{summary['sensitivity_at_goal_flag_rate']:.3f})"
    )
    with_candidates = {name: p["candidates"] for name, p in summary["projections"].items() if p.get("candidates")}
    if with_candidates:
        print("the case's disease among the served candidates of its EMR record (top1 top3 top10; beside, every finding "
              "ranked, commonplace illness included):")
        for name, c in with_candidates.items():
            every = c["all_findings"]
            print(f"  {name:26s}{c['top1']:6.3f}{c['top3']:6.3f}{c['top10']:6.3f}    "
                  f"{every['top1']:6.3f}{every['top3']:6.3f}{every['top10']:6.3f}")
    ranking = summary.get("ranking")
    if ranking:
        print(f"candidate ranking on the published HPO terms of {ranking['cases']} children ({ranking['cohorts']} cohorts; "
              f"{ranking['cases_with_disease_not_in_annotations']} with a disease absent from phenotype.hpoa):")
        from screening.ranking import RANKERS

        print(f"  {'ranker':38s}{'top1':>6s}{'top3':>6s}{'top10':>6s}  annotated: top1 top3 top10   mean over cohorts: top1 top10")
        rows = [(name, ranking[name]) for name in RANKERS]
        rows.append(("served: findings beyond commonplace", ranking.get("served", {})))
        rows.append(("weight choice, cohort CV", ranking.get("weight_choice_cross_validated", {})))
        for name, r in rows:
            if not r:
                continue
            served = " (served)" if name == "served: findings beyond commonplace" else ""
            print(
                f"  {name:38s}{r['top1']:6.3f}{r['top3']:6.3f}{r['top10']:6.3f}  "
                f"{r['top1_annotated']:15.3f}{r['top3_annotated']:6.3f}{r['top10_annotated']:6.3f}"
                f"{r['top1_mean_over_cohorts']:25.3f}{r['top10_mean_over_cohorts']:6.3f}{served}"
            )
        genes = ranking.get("gene_level")
        if genes:
            print(
                f"  the case's gene among the served candidates' genes: top1/3/10 {genes['top1']:.3f} {genes['top3']:.3f} "
                f"{genes['top10']:.3f}; annotated {genes['top1_annotated']:.3f} {genes['top3_annotated']:.3f} "
                f"{genes['top10_annotated']:.3f}; {genes['unannotated_with_gene_known']} of the diseases missing from "
                f"the annotations have a gene with annotated diseases, top10 {genes['top10_unannotated_with_gene_known'] or 0:.3f}"
            )


def _at_rates(points: dict[str, Any], rates: list[float], width: int = 11) -> str:
    """Sensitivity and its interval at each flag rate, as table cells."""
    cells = ""
    for r in rates:
        point = points[f"{r:g}"]
        lo, hi = point["sensitivity_95ci"]
        cells += f"{point['sensitivity']:{width}.3f}{f'{lo:.2f}-{hi:.2f}':>11s}"
    return cells


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from screening.train_screener import evaluation_summary, load_cases

    _, kb, maps = _knowledge()
    cases = load_cases(args.phenopackets)
    if not cases:
        sys.stderr.write(f"no phenopackets under {args.phenopackets}\n")
        return 2
    if not any(c.age_days is not None and c.age_days < 7 * 365.25 for c in cases):
        sys.stderr.write("no case is a child under 7 with an age: nothing to evaluate\n")
        return 2
    budget = args.budget or settings.screening_alert_budget
    report = evaluation_summary(
        cases, kb, maps, prevalence=args.prevalence, budget=budget, n_controls=args.controls, seed=args.seed
    )
    if args.json:
        print(json.dumps(report.summary))
    else:
        _print_report(report.summary)
    return 0


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from screening.registry import log_and_register, model_card
    from screening.risk_model import SHIPPED_SCREENER
    from screening.train_screener import train_and_evaluate

    _, kb, maps = _knowledge()
    budget = args.budget or settings.screening_alert_budget
    model, report = train_and_evaluate(
        args.phenopackets, kb, maps, prevalence=args.prevalence, budget=budget, n_controls=args.controls, seed=args.seed
    )
    out = SHIPPED_SCREENER if args.ship else (args.out or settings.home / "screening" / "screener.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    (out.parent / "screener_card.md").write_text(model_card(model), encoding="utf-8")
    _print_report(report.summary)
    print(f"screener {model.version} written to {out}")
    if not args.no_register:
        params = {"controls": args.controls, "seed": args.seed, "prevalence": args.prevalence, "alert_budget": budget}
        registered = log_and_register(settings.resolved_mlflow_tracking_uri, model, params)
        print(json.dumps(registered))
    return 0


def _register(args: argparse.Namespace, settings: Settings) -> int:
    """Log the shipped (or given) artefact as an MLflow run and make it champion, without retraining."""
    from screening.registry import log_and_register
    from screening.risk_model import load_risk_model

    model = load_risk_model(args.model or settings.screening_model_path)
    registered = log_and_register(settings.resolved_mlflow_tracking_uri, model, {"source": "shipped", **model.trained_on})
    print(json.dumps(registered))
    return 0


def _listed_unread(settings: Settings) -> tuple[str, ...]:
    from screening.results_store import unread_children

    return unread_children(settings.resolved_database_url)


def _screen_emr(args: argparse.Namespace, settings: Settings) -> int:
    from datasets.emr_csv import check_extract
    from datasets.errors import ExtractError
    from datasets.extract_partitions import bundle_files, compressed_files
    from datasets.fhir_bulk import bulk_files
    from screening.population import RunOptions, run_population

    if not args.input.exists():
        sys.stderr.write(f"{args.input} does not exist\n")
        return 2
    from screening.site_calendar import site_today

    options = RunOptions(
        as_of=(args.as_of or site_today()).isoformat(),
        budget=args.budget or settings.screening_alert_budget,
        max_age_years=settings.screening_max_age_years,
        model_path=str(settings.screening_model_path) if settings.screening_model_path else None,
        write_all=args.all,
        full_validation=args.validate == "full",
        partition_bytes=int(args.partition_mb * (1 << 20)),
        threshold=args.threshold if args.threshold is not None else settings.screening_risk_threshold,
        listed_unread=() if args.no_store else _listed_unread(settings),
    )
    # Every unread record is written with its reason, asked for or not: a child whose record could not be read
    # was not screened, and a count alone would not say which child nor why.
    errors_out = args.errors or _errors_beside(args.out)
    if errors_out.resolve() == args.out.resolve():
        sys.stderr.write(f"--errors and --out are both {args.out}: the one would overwrite the other\n")
        return 2
    try:
        if args.input.is_dir() and not (bulk_files(args.input) or bundle_files(args.input) or compressed_files(args.input)):
            try:
                check_extract(args.input)  # before the 6 s of loading the knowledge
            except ExtractError as exc:
                if (args.input / "patients.csv").is_file():
                    raise
                # Neither layout: say both, not only the CSV file a FHIR site never meant to write.
                raise ExtractError(
                    f"{args.input} holds no FHIR .ndjson or Bundle .json file, and is not a CSV extract ({exc})"
                ) from exc
        summary = run_population(
            args.input,
            args.out,
            options,
            errors_out=errors_out,
            work=args.work,
            workers=args.workers,
            scheduler=args.scheduler,
            quiet=args.quiet,
            keep_work=args.keep_work,
        )
    except ExtractError as exc:
        # A missing file or column makes every child look healthier than recorded: stop, name it.
        sys.stderr.write(f"cannot screen {args.input}: {exc}\n")
        return 2
    except FileExistsError as exc:
        sys.stderr.write(f"cannot screen {args.input}: {exc}\n")
        return 2
    report: dict[str, Any] = {
        **summary.counts,
        "errors_file": str(errors_out),
        "model_version": summary.model_version,
        "threshold": summary.threshold,
        "threshold_from": "the site's own threshold" if options.threshold is not None else "the budget",
        "partitions": summary.partitions,
        "resumed_partitions": summary.resumed,
        "seconds": {
            "splitting": round(summary.seconds_splitting, 1),
            "loading_knowledge": round(summary.seconds_loading, 1),
            "screening": round(summary.seconds_screening, 1),
        },
    }
    screened = summary.counts.get("screened", 0) + summary.counts.get("incomplete", 0)
    flag_rate = summary.counts.get("flagged", 0) / screened if screened else 0.0
    report["flag_rate"], report["budget"] = round(flag_rate, 5) if screened else None, options.budget
    if screened >= _RATE_CHECKED_FROM and flag_rate > _RATE_WARNED_AT * options.budget:
        # Not silent: the threshold was set on simulated ordinary children; a population that differs from them
        # (coding habits, a specialist clinic's case mix) flags more than the budget, and the team should know.
        sys.stderr.write(
            f"medscreen screen-emr: {flag_rate:.2%} of the {screened} children screened were flagged against an "
            f"alert budget of {options.budget:.2%}: this extract differs from the population the threshold was set on "
            "(a specialist clinic's children, other coding habits). Review a sample of the flags before acting on all; "
            "`medscreen screening calibrate` on a `screen-emr --all` output gives the threshold that holds the budget "
            "at this site, and what it costs.\n"
        )
    if not _children_read(summary.counts) and not summary.counts.get("errors", 0):
        # An export that failed on the way is the likeliest empty input: not silent, though not an error for the run.
        sys.stderr.write(f"medscreen screen-emr: {args.input} holds no child's record: nothing was screened.\n")
    if summary.counts.get("errors", 0):
        sys.stderr.write(
            f"medscreen screen-emr: {summary.counts['errors']} records could not be read and were not screened; "
            f"each is in {errors_out} with its reason.\n"
        )
    if summary.counts.get("repeated_patients", 0):
        # Not silent: the extract split the child; the records were read together (the first one's birth date and sex).
        sys.stderr.write(
            f"medscreen screen-emr: {summary.counts['repeated_patients']} children are in more than one record of "
            f"the extract; each was screened once, on its records together. They are named in {errors_out}: give each "
            "child one record (one Bundle, or a Bulk Data export).\n"
        )
    children = _children_read(summary.counts)
    if children and summary.counts.get("aged_out", 0) >= max(1, children // 10):
        # Not silent: an extract written some time ago, screened as of today, loses the children who have
        # turned 7 since; its own date is the one to screen it on.
        sys.stderr.write(
            f"medscreen screen-emr: {summary.counts['aged_out']} of {children} children were under "
            f"{settings.screening_max_age_years:g} at their record's last entry but are older on {options.as_of}, and were "
            "not screened: an older extract? Screen it --as-of the date it was extracted.\n"
        )
    from sqlalchemy.exc import SQLAlchemyError

    from screening.results_store import RunCounts, audit_output_lines, store_output_lines
    from screening.tables import BATCH_ACTOR_PREFIX
    from service.users_command import cli_actor

    # Who ran it (cli:<login>, as the users and export-training commands record it) is the audit rows' actor; the
    # extract is their detail and the stored rows' origin. The actor had been batch:<file>, which named no one.
    actor, batch = cli_actor(), f"{BATCH_ACTOR_PREFIX}{args.input.name}"[:64]
    try:
        # Every child the output names, stored or not (--no-store had written names and record numbers unaudited).
        report["audited"] = audit_output_lines(
            settings.resolved_database_url, args.out, actor, {"batch": batch, "out": args.out.name}
        )
    except SQLAlchemyError as exc:
        args.out.unlink(missing_ok=True)
        sys.stderr.write(
            f"medscreen screen-emr: cannot write the audit rows of {args.out} ({type(exc).__name__}): the output, "
            "which names each child, was removed; run it again once the database answers (finished partitions are kept)\n"
        )
        return 1
    if not args.no_store:
        # The driver stores what the partitions wrote (workers never write the database): flagged and
        # incomplete children reach the /screening page of their clinicians, and the run's counts quality's flag rate.
        stored = store_output_lines(
            settings.resolved_database_url, args.out, actor, submitted_by=batch,
            organization=args.organization or "",
            run=RunCounts(summary.model_version, screened, summary.counts.get("flagged", 0)),
        )
        report["stored"], report["stored_in_no_scope"], report["repeats_not_stored"] = stored
    if report.get("stored_in_no_scope"):
        # Not silent: a paediatrician sees a flag only through the record's practitioner or organisation.
        sys.stderr.write(
            f"medscreen screen-emr: {report['stored_in_no_scope']} stored results name no practitioner or organisation: "
            "no paediatrician sees them, only an admin. Give the extract's organisation with --organization "
            "Organization/<id> and let clinicians see it with `medscreen screening assign USER --organization "
            "Organization/<id>`.\n"
        )
    sys.stderr.write(json.dumps(report) + "\n")  # last: the line a script reads
    return 0


def _children_read(counts: dict[str, int]) -> int:
    return sum(counts.get(k, 0) for k in ("screened", "incomplete", "not_screened"))


def _errors_beside(out: Path) -> Path:
    """Where ``screen-emr`` writes its unread records when not told: ``flags.ndjson`` -> ``flags.errors.ndjson``."""
    return out.with_name(f"{out.stem if out.suffix == '.ndjson' else out.name}.errors.ndjson")


# A flag rate above twice the budget on at least 1,000 children is not sampling noise: at a 1% budget and 1,000
# children, 2% is about the binomial 99.9% quantile (2.1%).
_RATE_CHECKED_FROM = 1000
_RATE_WARNED_AT = 2.0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Write simulated children as FHIR NDJSON Bundles: ordinary children and cases (projected
    phenopackets with --phenopackets, else drawn from disease annotations), all under 7 on --as-of."""
    import random

    from datasets.fhir_emr import record_to_bundle
    from datasets.phenopackets import iter_phenopackets
    from screening.simulate import CaseProjector, annotation_case, simulate_controls
    from screening.site_calendar import site_today

    ontology, kb, maps = _knowledge()
    as_of = args.as_of or site_today()
    n_cases = round(args.n * args.case_share)
    rng = random.Random(args.seed)
    projector = CaseProjector(maps)
    lines: list[tuple[str, str]] = []
    for record, _ in simulate_controls(maps, args.n - n_cases, args.seed, as_of):
        lines.append(("control", json.dumps(record_to_bundle(record))))
    if args.phenopackets:
        real = [c for c in iter_phenopackets(args.phenopackets) if c.age_days is not None and c.age_days < 7 * 365.25]
        cases = rng.sample(real, min(n_cases, len(real))) if n_cases else real
    else:
        cases = [annotation_case(kb, rng, i) for i in range(n_cases)]
    for case in cases:
        projected = projector.project(case, rng, as_of=as_of)
        if projected is not None:
            lines.append(("case", json.dumps(record_to_bundle(projected[0]))))
    rng.shuffle(lines)
    with args.out.open("w", encoding="utf-8") as out:
        out.writelines(line + "\n" for _, line in lines)
    made = sum(kind == "case" for kind, _ in lines)
    print(f"{len(lines)} children written to {args.out} ({made} cases, {len(lines) - made} controls; as of {as_of})")
    return 0


def _care_teams(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The ``(column, reference)`` pairs named on the command line: ``practitioner`` and/or ``organization``."""
    return [(column, ref) for column, ref in (("practitioner", args.practitioner), ("organization", args.organization)) if ref]


def _overlong_reference(teams: list[tuple[str, str]]) -> str | None:
    """Why a reference cannot be assigned: longer than a stored result's practitioner or organisation (128
    characters, clipped there), it could never match one; PostgreSQL refused it with a traceback."""
    from sqlalchemy import String

    from screening.tables import ScreeningAssignment

    for column, reference in teams:
        kind = ScreeningAssignment.__table__.c[column].type
        limit = kind.length if isinstance(kind, String) else None
        if limit is not None and len(reference) > limit:
            return f"the {column} reference is {len(reference)} characters long; at most {limit} are stored with a result"
    return None


def _teams_asked(args: argparse.Namespace, command: str) -> tuple[list[tuple[str, str]], int | None]:
    """The care teams ``assign``/``unassign`` were given, or the exit code after saying why none can be used."""
    teams = _care_teams(args)
    if not teams:
        sys.stderr.write(f"medscreen screening {command}: give --practitioner or --organization\n")
        return teams, 2
    if (problem := _overlong_reference(teams)) is not None:
        sys.stderr.write(f"medscreen screening {command}: {problem}\n")
        return teams, 1
    return teams, None


def _assign(args: argparse.Namespace, settings: Settings) -> int:
    """Let a paediatrician see the flags of a practitioner's or an organisation's children.

    Only an existing paediatrician is assigned (a mistyped name had been reported a success, and the real
    clinician saw nothing); an assignment that exists already is said so with exit code 0 (it had been an
    IntegrityError traceback), so a runbook can be run again. Each new assignment is audited."""
    from screening.tables import ScreeningAssignment
    from service.audit import record_audit
    from service.db import make_engine, make_session_factory, session_scope
    from service.errors import UserError
    from service.users_command import cli_actor

    teams, refused = _teams_asked(args, "assign")
    if refused is not None:
        return refused
    actor = cli_actor()
    engine = make_engine(settings.resolved_database_url)  # the schema was brought up to date by the root
    try:
        with session_scope(make_session_factory(engine)) as session:
            _check_paediatrician(session, args.username)
            for column, reference in teams:
                match = {"practitioner": "", "organization": "", column: reference}
                existing = session.scalars(_select_assignments(args.username).filter_by(**match)).first()
                if existing is not None:
                    print(f"{args.username} already sees flags of {reference}")
                    continue
                session.add(ScreeningAssignment(username=args.username, assigned_by=actor, **match))
                session.flush()
                record_audit(session, actor, "screening.assign", "user", args.username, match)
                print(f"{args.username} now sees flags of {reference}")
    except UserError as error:
        sys.stderr.write(f"medscreen screening assign: {error}\n")
        return 1
    finally:
        engine.dispose()
    return 0


def _check_paediatrician(session: Session, username: str) -> None:
    """Only a paediatrician's page is narrowed to their assignments (an admin sees every flag)."""
    from service.errors import UnknownUser, UserError
    from service.tables import Role
    from service.users import get_user

    user = get_user(session, username)
    if user is None:
        raise UnknownUser(f"no user {username!r}")
    if Role.paediatrician not in user.roles:
        held = ", ".join(sorted(user.roles)) or "none"
        raise UserError(
            f"{username} is not a paediatrician (roles: {held}); only a paediatrician sees the flags of an "
            f"assignment (`medscreen users set-roles {username} --role paediatrician ...`)"
        )


def _select_assignments(username: str | None) -> Select[ScreeningAssignment]:
    """Assignments in a stable order (by user, then as made), of one user or of everyone."""
    from sqlalchemy import select

    from screening.tables import ScreeningAssignment

    query = select(ScreeningAssignment).order_by(ScreeningAssignment.username, ScreeningAssignment.id)
    return query if username is None else query.where(ScreeningAssignment.username == username)


def _assignments(args: argparse.Namespace, settings: Settings) -> int:
    """List the assignments (one user's, or everyone's): username, practitioner or organisation, by whom, when."""
    from service.db import make_engine, make_session_factory, session_scope

    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            for row in session.scalars(_select_assignments(args.username)):
                for reference in (row.practitioner, row.organization):
                    if reference:
                        print(f"{row.username}\t{reference}\t{row.assigned_by}\t{row.assigned_at.isoformat()}")
    finally:
        engine.dispose()
    return 0


def _unassign(args: argparse.Namespace, settings: Settings) -> int:
    """Undo ``assign``: the clinician no longer sees that practitioner's or organisation's flags (audited)."""
    from service.audit import record_audit
    from service.db import make_engine, make_session_factory, session_scope
    from service.errors import UnknownUser
    from service.users import get_user
    from service.users_command import cli_actor

    teams, refused = _teams_asked(args, "unassign")
    if refused is not None:
        return refused
    actor = cli_actor()
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            if get_user(session, args.username) is None:
                raise UnknownUser(f"no user {args.username!r}")
            for column, reference in teams:
                rows = session.scalars(_select_assignments(args.username).filter_by(**{column: reference})).all()
                if not rows:
                    print(f"{args.username} was not assigned to {reference}")
                    continue
                for row in rows:
                    other = "organization" if column == "practitioner" else "practitioner"
                    if getattr(row, other):  # one row of an earlier `assign` with both options: keep the other
                        setattr(row, column, "")
                    else:
                        session.delete(row)
                session.flush()
                record_audit(session, actor, "screening.unassign", "user", args.username, {column: reference})
                print(f"{args.username} no longer sees flags of {reference}")
    except UnknownUser as error:
        sys.stderr.write(f"medscreen screening unassign: {error}\n")
        return 1
    finally:
        engine.dispose()
    return 0


def _build_icd10_map(args: argparse.Namespace, settings: Settings) -> int:
    from screening.icd10_map import build_icd10_map
    from screening.ontology import load_ontology

    table = build_icd10_map(load_ontology(), args.out)
    print(f"{len(table.rows)} rows for {len(table)} ICD-10 codes")
    return 0


def _build_orphan_table(args: argparse.Namespace, settings: Settings) -> int:
    from screening.icd10_map import load_icd10_map
    from screening.orphanet import build_orphan_table

    table = build_orphan_table(args.master, load_icd10_map(), args.out, entity_list=args.entity_list)
    print(f"{len(table)} ICD-10 codes and {len(table.by_name)} names mean a diagnosed orphan disease")
    return 0


def _calibrate(args: argparse.Namespace, settings: Settings) -> int:
    """Print the threshold that flags the budget of a site's screened children (``screening/site_threshold.py``)."""
    from screening.errors import CalibrationError
    from screening.risk_model import load_risk_model
    from screening.site_threshold import risks_of_output, site_threshold

    budget = args.budget or settings.screening_alert_budget
    try:
        risks, current, version = risks_of_output(args.results)
        model = load_risk_model(settings.screening_model_path)
        found = site_threshold(risks, budget, current, model if model.version == version else None, version)
    except CalibrationError as exc:
        sys.stderr.write(f"cannot calibrate on {args.results}: {exc}\n")
        return 2
    sys.stderr.write(
        f"{found.children} children screened by {version}: the threshold {found.current_threshold:.4f} flagged "
        f"{found.current_flag_rate:.2%}; {found.threshold:.4f} (95% over resamples {found.interval[0]:.4f}-"
        f"{found.interval[1]:.4f}) flags {found.flag_rate:.2%}, keeping {found.still_flagged} of the {found.flagged_now} "
        f"flagged now. A higher threshold finds fewer cases too. To use it: MEDSCREEN_SCREENING_RISK_THRESHOLD="
        f"{found.threshold!r}\n"
    )
    print(json.dumps(found.as_dict()))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser("screening", help="rare-disease screening: evaluate, train, build code tables")
    commands = group.add_subparsers(dest="screening_command", required=True, metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--phenopackets", type=Path, required=True, help="folder of phenopacket JSON files (recursive)")
        p.add_argument("--controls", type=int, default=2000, help="simulated control children per projection (2000)")
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--prevalence", type=float, default=DEFAULT_PREVALENCE, help="population prevalence (1/500)")
        p.add_argument("--budget", type=float, default=None, help="flags per child screened (default the setting)")

    evaluate = commands.add_parser("evaluate", help="disease-held-out evaluation vs simulated controls and baselines")
    common(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    evaluate.set_defaults(func=_evaluate, needs_home=False)

    train = commands.add_parser("train", help="train the risk model, log it to MLflow, register it as champion")
    common(train)
    train.add_argument("--out", type=Path, default=None, help="artefact path (default $MEDSCREEN_HOME/screening/)")
    train.add_argument("--ship", action="store_true", help="overwrite the artefact shipped in the package")
    train.add_argument("--no-register", action="store_true", help="do not log to MLflow")
    train.set_defaults(func=_train)

    register = commands.add_parser("register", help="log the shipped screener to MLflow and make it champion")
    register.add_argument("--model", type=Path, default=None, help="artefact (default the shipped one)")
    register.set_defaults(func=_register)

    simulate = commands.add_parser("simulate", help="write simulated children as FHIR NDJSON (one Bundle per line)")
    simulate.add_argument("--n", type=int, default=1000)
    simulate.add_argument("--seed", type=int, default=11)
    simulate.add_argument("--phenopackets", type=Path, default=None, help="cases from these phenopackets (else from annotations)")
    simulate.add_argument("--case-share", type=float, default=0.05, help="share of the children that are cases (0.05)")
    simulate.add_argument("--as-of", type=date.fromisoformat, default=None, help="screening date (default the site's today: the TZ of this process)")
    simulate.add_argument("--out", type=Path, required=True)
    simulate.set_defaults(func=_simulate, needs_home=False)

    calibrate = commands.add_parser(
        "calibrate", help="the site's own alert threshold from a `screen-emr --all` output of its children"
    )
    calibrate.add_argument("results", type=Path, help="NDJSON written by `medscreen screen-emr --all`")
    calibrate.add_argument("--budget", type=float, default=None, help="flags per child screened (default the setting)")
    calibrate.set_defaults(func=_calibrate, needs_home=False)

    assign = commands.add_parser("assign", help="let a paediatrician see a practitioner's or organisation's flags")
    assign.add_argument("username")
    assign.add_argument("--practitioner", default=None, help="reference as in the record, e.g. Practitioner/123")
    assign.add_argument("--organization", default=None, help="reference as in the record, e.g. Organization/clinic-7")
    assign.set_defaults(func=_assign, needs_database=True)

    unassign = commands.add_parser("unassign", help="undo `assign`: the clinician no longer sees those flags")
    unassign.add_argument("username")
    unassign.add_argument("--practitioner", default=None, help="reference as assigned, e.g. Practitioner/123")
    unassign.add_argument("--organization", default=None, help="reference as assigned, e.g. Organization/clinic-7")
    unassign.set_defaults(func=_unassign, needs_database=True)

    assignments = commands.add_parser("assignments", help="list who sees which practitioner's or organisation's flags")
    assignments.add_argument("username", nargs="?", default=None, help="only this user's (default everyone's)")
    assignments.set_defaults(func=_assignments, needs_database=True)

    icd = commands.add_parser("build-icd10-map", help="rebuild the ICD-10 -> HPO table")
    icd.add_argument("--out", type=Path, default=None)
    icd.set_defaults(func=_build_icd10_map, needs_home=False)

    orphan = commands.add_parser("build-orphan-table", help="rebuild the orphan-diagnosis ICD-10 and name tables from Orphanet")
    orphan.add_argument("--master", type=Path, required=True, help="ORPHAnomenclature_MasterFile_en_2025.xlsx")
    orphan.add_argument("--out", type=Path, default=None)
    orphan.add_argument("--entity-list", type=Path, default=None,
                        help="List_of_rare_diseases_2025_en.xlsx (subtypes and groups; default: beside --master)")
    orphan.set_defaults(func=_build_orphan_table, needs_home=False)

    batch = subparsers.add_parser("screen-emr", help="screen a population extract (FHIR Bundle/NDJSON or CSV folder)")
    batch.add_argument(
        "input", type=Path,
        help="a Bundle .json, an .ndjson file, a Bulk Data $export folder, a folder of Bundle .json files "
        "(one per patient, as Synthea writes them) or a CSV extract folder"
    )
    batch.add_argument("--out", type=Path, required=True, help="NDJSON of flagged children (RiskAssessment + Flag)")
    batch.add_argument(
        "--errors", type=Path, default=None,
        help="NDJSON of records that could not be read, each with its reason, and of children in more than one "
        "record (default: beside --out, flags.ndjson -> flags.errors.ndjson)",
    )
    batch.add_argument("--as-of", type=date.fromisoformat, default=None, help="screening date (default the site's today: the TZ of this process)")
    batch.add_argument("--budget", type=float, default=None, help="flags per child screened (default the setting)")
    batch.add_argument("--all", action="store_true", help="write every child, not only the flagged ones")
    batch.add_argument(
        "--threshold", type=float, default=None,
        help="alert threshold (default the setting screening_risk_threshold, else from the budget)",
    )
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.add_argument("--workers", type=int, default=1, help="Dask LocalCluster worker processes (1: in this process)")
    batch.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:8786)")
    batch.add_argument("--work", type=Path, default=None, help="work folder for partitions (default OUT.work)")
    batch.add_argument("--keep-work", action="store_true", help="keep the work folder after the merge")
    batch.add_argument(
        "--validate",
        choices=("fast", "full"),
        default="fast",
        help="fast: the elements screening uses (default); full: every resource through fhir.resources",
    )
    batch.add_argument("--partition-mb", type=float, default=16.0, help="size of a partition of the extract (MB)")
    batch.add_argument(
        "--no-store", action="store_true",
        help="do not store flagged and incomplete results for the /screening page (each child written to --out is "
        "audited all the same: the database is needed)",
    )
    batch.add_argument(
        "--organization",
        default=None,
        help="the extract's organisation (e.g. Organization/clinic-7), stored with results whose record names no "
        "practitioner or organisation, so that clinicians assigned to it see them",
    )
    # The database always: every child the output names is audited, --no-store or not.
    batch.set_defaults(func=_screen_emr, needs_home=True, needs_database=True)
