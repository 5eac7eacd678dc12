"""The reference market (32 learnwares, 24 user tasks) and the quick slice that CI runs.

Split: in every data set, records at u < 0.4 (see `lmdock.lab.datasets.position`) are reserved
for user tasks, records at u >= 0.4 for learnwares. Learnwares on the same data set take
disjoint u-ranges or disjoint filters, so no two are trained on the same records for the same
labels. One task (medquad, consumer sources) comes from sources no learnware saw at all.
"""

from __future__ import annotations

import dataclasses

from lmdock.lab.datasets import Selection
from lmdock.lab.definitions import LearnwareDef, MarketDef, TaskDef

__all__ = ["FULL", "QUICK", "QUICK_MIXED"]

TASKS = (0.0, 0.4)
TRAIN = (0.4, 1.0)
TASK_SIZE = 300

BANKING = "finance/banking77"
TFNS = "finance/twitter_financial_news_sentiment"
TATQA = "finance/tatqa"
MEDQUAD = "medical/medquad"
PUBMEDQA = "medical/pubmedqa"
MATH = "math/math_competition"
GSM8K = "math/gsm8k"
STRATEGYQA = "general/strategyqa"

LICENCES = {
    BANKING: "CC BY 4.0; BANKING77, Casanueva et al., Efficient Intent Detection with Dual Sentence "
    "Encoders, 2020 (PolyAI)",
    TFNS: "MIT; Twitter Financial News Sentiment (zeroshot), licence declared on the dataset card; the "
    "GitHub copy umaima-aman/Twee_Sentiment_Analysis-DeepLearning has no licence file",
    TATQA: "CC BY 4.0; TAT-QA, Zhu et al., ACL 2021 (NExTplusplus/TAT-QA; code MIT)",
    MEDQUAD: "CC BY 4.0; MedQuAD, Ben Abacha & Demner-Fushman, BMC Bioinformatics 2019",
    PUBMEDQA: "MIT; PubMedQA, Jin et al., EMNLP 2019",
    MATH: "MIT; MATH, Hendrycks et al., NeurIPS 2021 (via ZubinGou/math-evaluation-harness, MIT)",
    GSM8K: "MIT; GSM8K, Cobbe et al., 2021 (openai/grade-school-math)",
    STRATEGYQA: "MIT; StrategyQA, Geva et al., TACL 2021",
    "medical/covid_qa": "Apache-2.0; COVID-QA, Möller et al., 2020 (deepset)",
    "math/aqua_rat": "Apache-2.0; AQuA-RAT, Ling et al., ACL 2017 (DeepMind)",
}

#: BANKING77's 77 intents in seven groups of related requests; each group is one learnware.
BANKING_GROUPS = {
    "cards": "card_arrival card_delivery_estimate card_linking activate_my_card get_physical_card "
    "order_physical_card getting_spare_card card_about_to_expire getting_virtual_card "
    "get_disposable_virtual_card virtual_card_not_working disposable_card_limits",
    "card-problems": "card_not_working lost_or_stolen_card compromised_card card_swallowed pin_blocked "
    "change_pin passcode_forgotten contactless_not_working lost_or_stolen_phone card_acceptance "
    "apple_pay_or_google_pay visa_or_mastercard supported_cards_and_currencies",
    "top-up": "automatic_top_up top_up_by_bank_transfer_charge pending_top_up top_up_limits top_up_reverted "
    "topping_up_by_card verify_top_up top_up_by_cash_or_cheque top_up_failed top_up_by_card_charge",
    "transfers": "cancel_transfer transfer_not_received_by_recipient declined_transfer pending_transfer "
    "transfer_timing beneficiary_not_allowed transfer_fee_charged receiving_money failed_transfer "
    "transfer_into_account balance_not_updated_after_bank_transfer",
    "payments": "card_payment_wrong_exchange_rate extra_charge_on_statement card_payment_fee_charged "
    "card_payment_not_recognised direct_debit_payment_not_recognised pending_card_payment request_refund "
    "Refund_not_showing_up declined_card_payment transaction_charged_twice reverted_card_payment?",
    "cash-exchange": "pending_cash_withdrawal exchange_rate fiat_currency_support exchange_via_app "
    "wrong_amount_of_cash_received atm_support declined_cash_withdrawal "
    "wrong_exchange_rate_for_cash_withdrawal cash_withdrawal_not_recognised exchange_charge "
    "cash_withdrawal_charge balance_not_updated_after_cheque_or_cash_deposit",
    "account": "age_limit edit_personal_details why_verify_identity unable_to_verify_identity "
    "verify_source_of_funds terminate_account verify_my_identity country_support",
}

#: MedQuAD's sources: four learnwares' worth, and the consumer-health sources no learnware sees.
MEDQUAD_SOURCES = {
    "ghr": ("GHR",),
    "gard": ("GARD",),
    "niddk-nhlbi": ("NIDDK", "NHLBI"),
    "ninds": ("NINDS",),
    "cancer-cdc": ("CancerGov", "CDC"),
}
UNSEEN_MEDQUAD_SOURCES = ("MPlusHealthTopics", "NIHSeniorHealth")
MATH_SUBJECTS = {
    "algebra": "Algebra",
    "prealgebra": "Prealgebra",
    "intermediate-algebra": "Intermediate Algebra",
    "precalculus": "Precalculus",
    "geometry": "Geometry",
    "number-theory": "Number Theory",
    "counting-probability": "Counting & Probability",
}
LEVELS = ("1", "2", "3", "4", "5")


def _lw(id_: str, name: str, domain: str, description: str, *data: Selection, **kw: object) -> LearnwareDef:
    return LearnwareDef(id=id_, name=name, domain=domain, description=description, data=data, **kw)  # type: ignore[arg-type]


def _learnwares() -> list[LearnwareDef]:
    out = [
        _lw(
            "fin-tfns-sentiment",
            "Finance news sentiment",
            "finance",
            "Bearish / bullish / neutral sentiment of finance news tweets (Twitter Financial News).",
            Selection(TFNS, "label", TRAIN, limit=700),
            tags=("sentiment",),
        ),
    ]
    for group, intents in BANKING_GROUPS.items():
        out.append(
            _lw(
                f"fin-banking-{group}",
                f"Banking intents: {group.replace('-', ' ')}",
                "finance",
                f"Intent of retail-banking customer messages about {group.replace('-', ' ')} (BANKING77).",
                Selection(BANKING, "label", TRAIN, where=(("label", tuple(intents.split())),)),
                tags=("intent",),
            )
        )
    for label, (name, part) in {
        "meta.answer_type": ("answer-type", (0.4, 0.6)),
        "tatqa_scale": ("scale", (0.6, 0.8)),
        "meta.answer_from": ("answer-source", (0.8, 1.0)),
    }.items():
        out.append(
            _lw(
                f"fin-tatqa-{name}",
                f"Annual-report question {name.replace('-', ' ')}",
                "finance",
                f"The {name.replace('-', ' ')} of a question over an annual-report table and text (TAT-QA).",
                Selection(TATQA, label, part),
                tags=("question-type", "tables"),
                max_tokens=96,
            )
        )
    for key, sources in MEDQUAD_SOURCES.items():
        out.append(
            _lw(
                f"med-medquad-{key}",
                f"Medical question type ({'/'.join(sources)})",
                "medical",
                f"Type of a consumer health question from {', '.join(sources)} (MedQuAD).",
                Selection(MEDQUAD, "label", TRAIN, where=(("meta.source", sources),), limit=600),
                tags=("question-type",),
            )
        )
    out.append(
        _lw(
            "med-pubmedqa",
            "Biomedical yes/no/maybe",
            "medical",
            "Answers a research question from its PubMed abstract with yes, no or maybe (PubMedQA).",
            Selection(PUBMEDQA, "answer", TRAIN),
            tags=("yes-no",),
            max_tokens=96,
        )
    )
    for level in LEVELS:
        out.append(
            _lw(
                f"math-subject-level{level}",
                f"Math subject (level {level})",
                "math",
                f"Subject of a level-{level} competition math problem (MATH).",
                Selection(MATH, "label", TRAIN, where=(("meta.level", (f"Level {level}",)),)),
                tags=("subject",),
            )
        )
    for key, subject in MATH_SUBJECTS.items():
        out.append(
            _lw(
                f"math-level-{key}",
                f"{subject} problem difficulty",
                "math",
                f"Difficulty level (1-5) of a competition {subject} problem (MATH).",
                Selection(MATH, "meta.level", TRAIN, where=(("label", (subject,)),)),
                tags=("difficulty",),
            )
        )
    out.append(
        _lw(
            "math-gsm8k-steps",
            "Word-problem solution length",
            "math",
            "How many calculation steps a grade-school word problem needs (GSM8K).",
            Selection(GSM8K, "gsm8k_steps", TRAIN, limit=700),
            tags=("difficulty",),
        )
    )
    out.append(
        _lw(
            "gen-strategyqa",
            "Trivia yes/no",
            "general",
            "Answers open-domain yes/no questions that need implicit reasoning (StrategyQA).",
            Selection(STRATEGYQA, "answer", TRAIN, limit=700),
            tags=("yes-no",),
        )
    )
    seen_medquad = tuple(s for sources in MEDQUAD_SOURCES.values() for s in sources)
    out.append(
        _lw(
            "gen-domain-router",
            "Question domain router",
            "general",
            "Which domain a question or message belongs to: finance, medical, math or general.",
            *(
                Selection(d, "domain", TRAIN, limit=70)
                for d in (BANKING, TFNS, TATQA, PUBMEDQA, MATH, GSM8K, STRATEGYQA)
            ),
            Selection(MEDQUAD, "domain", TRAIN, where=(("meta.source", seen_medquad),), limit=70),
            Selection("medical/covid_qa", "domain", TRAIN, limit=70),
            Selection("math/aqua_rat", "domain", TRAIN, limit=70),
            tags=("routing",),
        )
    )
    return out


def _tasks() -> list[TaskDef]:
    out = [
        TaskDef(
            "fin-sentiment",
            "finance",
            "Sentiment of finance news tweets",
            (Selection(TFNS, "label", TASKS, limit=TASK_SIZE),),
            ("fin-tfns-sentiment",),
        )
    ]
    for group, intents in BANKING_GROUPS.items():
        out.append(
            TaskDef(
                f"fin-banking-{group}",
                "finance",
                f"Banking customer intents: {group.replace('-', ' ')}",
                (Selection(BANKING, "label", TASKS, where=(("label", tuple(intents.split())),)),),
                (f"fin-banking-{group}",),
            )
        )
    for label, name, part in (
        ("meta.answer_type", "answer-type", (0.0, 0.2)),
        ("tatqa_scale", "scale", (0.2, 0.4)),
    ):
        out.append(
            TaskDef(
                f"fin-tatqa-{name}",
                "finance",
                f"Annual-report questions: {name.replace('-', ' ')}",
                (Selection(TATQA, label, part, limit=TASK_SIZE),),
                (f"fin-tatqa-{name}",),
            )
        )
    for key in ("ghr", "gard", "niddk-nhlbi"):
        out.append(
            TaskDef(
                f"med-qtype-{key}",
                "medical",
                f"Medical question types, {'/'.join(MEDQUAD_SOURCES[key])} questions",
                (
                    Selection(
                        MEDQUAD,
                        "label",
                        TASKS,
                        where=(("meta.source", MEDQUAD_SOURCES[key]),),
                        limit=TASK_SIZE,
                    ),
                ),
                (f"med-medquad-{key}",),
            )
        )
    out += [
        TaskDef(
            "med-qtype-unseen-sources",
            "medical",
            "Medical question types from sources no learnware saw (MedlinePlus, NIHSeniorHealth)",
            (
                Selection(
                    MEDQUAD,
                    "label",
                    (0.0, 1.0),
                    where=(("meta.source", UNSEEN_MEDQUAD_SOURCES),),
                    limit=TASK_SIZE,
                ),
            ),
            tuple(f"med-medquad-{key}" for key in MEDQUAD_SOURCES),
        ),
        TaskDef(
            "med-pubmedqa",
            "medical",
            "Biomedical yes/no/maybe questions with abstracts",
            (Selection(PUBMEDQA, "answer", TASKS, limit=TASK_SIZE),),
            ("med-pubmedqa",),
        ),
    ]
    for level in ("3", "4", "5"):
        out.append(
            TaskDef(
                f"math-subject-level{level}",
                "math",
                f"Subject of level-{level} competition problems",
                (Selection(MATH, "label", TASKS, where=(("meta.level", (f"Level {level}",)),)),),
                (f"math-subject-level{level}",),
            )
        )
    for key in ("algebra", "prealgebra", "intermediate-algebra"):
        out.append(
            TaskDef(
                f"math-level-{key}",
                "math",
                f"Difficulty of {MATH_SUBJECTS[key]} problems",
                (Selection(MATH, "meta.level", TASKS, where=(("label", (MATH_SUBJECTS[key],)),)),),
                (f"math-level-{key}",),
            )
        )
    out += [
        TaskDef(
            "math-gsm8k-steps",
            "math",
            "Solution length of grade-school word problems",
            (Selection(GSM8K, "gsm8k_steps", TASKS, limit=TASK_SIZE),),
            ("math-gsm8k-steps",),
        ),
        TaskDef(
            "gen-strategyqa",
            "general",
            "Open-domain yes/no questions",
            (Selection(STRATEGYQA, "answer", TASKS, limit=TASK_SIZE),),
            ("gen-strategyqa",),
        ),
        TaskDef(
            "gen-domain-routing",
            "general",
            "Domain of mixed incoming questions",
            tuple(
                Selection(d, "domain", TASKS, limit=30)
                for d in (
                    BANKING,
                    TFNS,
                    TATQA,
                    PUBMEDQA,
                    MATH,
                    GSM8K,
                    STRATEGYQA,
                    MEDQUAD,
                    "medical/covid_qa",
                    "math/aqua_rat",
                )
            ),
            ("gen-domain-router",),
        ),
    ]
    return out


FULL = MarketDef(name="reference", learnwares=tuple(_learnwares()), tasks=tuple(_tasks()), licences=LICENCES)

#: The quick slice: the four samples shipped in lmdock/lab/data, one learnware and one task each.
_QUICK_SAMPLES = {
    "tfns": (
        "finance",
        "Finance news sentiment",
        "MIT; Twitter Financial News Sentiment (see lab/data/README.md)",
    ),
    "banking77": ("finance", "Banking intents", "CC BY 4.0; BANKING77, Casanueva et al. 2020"),
    "medquad": ("medical", "Medical question type", "CC BY 4.0; MedQuAD, Ben Abacha & Demner-Fushman 2019"),
    "math_competition": ("math", "Math problem subject", "MIT; MATH, Hendrycks et al. 2021"),
}
QUICK = MarketDef(
    name="quick",
    learnwares=tuple(
        LearnwareDef(
            id=f"quick-{sample.replace('_', '-')}",
            name=name,
            domain=domain,
            description=f"{name} (quick slice, trained on a small sample).",
            data=(Selection(sample, "label", TRAIN, limit=240),),
        )
        for sample, (domain, name, _) in _QUICK_SAMPLES.items()
    ),
    tasks=tuple(
        TaskDef(
            id=f"quick-{sample.replace('_', '-')}",
            domain=domain,
            description=f"{name} (quick slice)",
            data=(Selection(sample, "label", TASKS, limit=100),),
            right=(f"quick-{sample.replace('_', '-')}",),
        )
        for sample, (domain, name, _) in _QUICK_SAMPLES.items()
    ),
    licences={sample: licence for sample, (_, _, licence) in _QUICK_SAMPLES.items()},
)

#: The leave-one-data-set-out check that CI runs (`identification`): one specialist per shipped
#: sample (80 records) and a mixture learnware over all four (20 records each); no user tasks.
QUICK_MIXED = MarketDef(
    name="quick-mixed",
    learnwares=(
        *(
            dataclasses.replace(lw, data=(dataclasses.replace(lw.data[0], limit=80),))
            for lw in QUICK.learnwares
        ),
        LearnwareDef(
            id="quick-router",
            name="Sample router",
            domain="general",
            description="Which sample a text comes from (quick slice, a mixture of all four).",
            data=tuple(Selection(sample, "domain", TRAIN, limit=20) for sample in _QUICK_SAMPLES),
        ),
    ),
    tasks=(),
    licences=QUICK.licences,
)
