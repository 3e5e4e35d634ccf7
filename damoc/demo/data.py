"""Deterministic demo data: two domain tasks for the quickstart, plus generic text for the tiny zoo.

- `qa_long`: long-answer Q&A over a fictional medical knowledge base generated from the seed. Every answer
  is fixed by the facts the question asks about, so a model can learn it from the training rows; eval
  questions ask about facts the training rows cover, in another wording or combined with a second fact.
- `extractive_qa`: reading comprehension whose answer is an exact span of a 2-4 sentence context. The
  question repeats the words that stand right before the answer in the context ("X was born in which
  town?" / "X was born in Tolvik."), and a context never holds two spans of the asked type, so a tiny
  model can answer by finding "the town in the context" and copying it.

`generic_text` / `generic_instructions` feed the zoo's pretraining and instruction tuning: general-domain
text with copy-style passages, and lookup/copy/list instructions. They never contain the demo tasks' rows
or medical facts, so the chat models know the prompt format and generic skills but not the answers.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Callable

from damoc import atomic

TASKS = ("qa_long", "extractive_qa", "extractive_closed", "summarisation", "instruction_mc", "qa_filler")

QA_LONG_INSTRUCTION = "Answer the medical question in a few sentences."
EXTRACTIVE_INSTRUCTION = "Answer the question with a short span copied from the context."

# ----------------------------------------------------------------------------------------------------
# shared vocabulary
_SYLLABLES = ("ka", "lo", "mer", "vin", "tar", "sel", "do", "ran", "pel", "zu", "mo", "ther", "bal",
              "cor", "nes", "ti", "vra", "len", "os", "quin", "fal", "ri", "gon", "ash", "ber", "lum")
_FIRST_NAMES = ("Anna", "Tomas", "Lena", "Marek", "Sofia", "Jonas", "Clara", "Pavel", "Ines", "Oskar",
                "Nora", "Felix", "Mira", "Hugo", "Elsa", "Viktor", "Ida", "Bruno", "Alma", "Kasper",
                "Rosa", "Emil", "Vera", "Anton", "Lotte", "Milan", "Greta", "Otto", "Nadia", "Leon")
_LAST_NAMES = ("Berg", "Verin", "Holm", "Castell", "Dorn", "Ferrand", "Galvez", "Hartley", "Ivers",
               "Jansky", "Kovar", "Lindqvist", "Moreau", "Novak", "Olsen", "Petrov", "Quist", "Rinaldi",
               "Strand", "Toller", "Ulrich", "Vasquez", "Wendt", "Yarrow", "Zeller", "Abbot", "Brandt",
               "Crane", "Dahl", "Engel")
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_COLOURS = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple", "grey", "brown")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def _unique_words(rng: random.Random, n: int, parts: tuple[int, ...], taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = _word(rng, rng.choice(parts))
        if w not in taken and len(w) >= 4:
            taken.add(w)
            out.append(w)
    return out


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ----------------------------------------------------------------------------------------------------
# qa_long: fictional medical knowledge base
_ORGANS = ("liver", "kidneys", "lungs", "skin", "heart", "joints", "stomach", "eyes", "nerves", "blood",
           "bones", "thyroid gland")
_SYMPTOMS = ("fever", "joint pain", "a dry cough", "night sweats", "blurred vision", "a skin rash", "fatigue",
             "headaches", "nausea", "muscle cramps", "shortness of breath", "weight loss", "dizziness",
             "swollen ankles", "chest pain", "itching", "pale skin", "a fast heartbeat", "back pain",
             "loss of appetite", "tingling in the hands", "yellow eyes", "sore throat", "chills")
_CAUSES = ("a virus spread by ticks", "a shortage of vitamin K", "an inherited enzyme defect",
           "long exposure to grain dust", "an autoimmune reaction", "a bacterial infection",
           "a parasite found in river water", "a fungal spore in damp buildings", "a blocked bile duct",
           "a faulty thyroid hormone receptor", "a lack of dietary iron", "a reaction to mould toxins")
_SPREAD = ("It is not contagious.", "It can pass between people through close contact.",
           "It often runs in families.", "It is more common in wet seasons.",
           "It develops slowly over several years.", "It usually starts after a minor injury.")
_RISK_GROUPS = ("older adults", "children under five", "farm workers", "pregnant women", "smokers",
                "long-distance runners", "people with diabetes", "night-shift workers", "miners",
                "people over sixty")
_TESTS = (("a blood test", "a raised white cell count"), ("a chest X-ray", "cloudy patches in the lungs"),
          ("a skin biopsy", "swollen sweat glands"), ("an ultrasound scan", "an enlarged organ"),
          ("a urine test", "high protein levels"), ("an eye exam", "small bleeds in the retina"),
          ("a stool culture", "parasite eggs"), ("a nerve conduction test", "slowed nerve signals"),
          ("a bone density scan", "thin bone tissue"), ("a liver panel", "high liver enzymes"))
_DOSES = ("5 mg", "10 mg", "20 mg", "25 mg", "40 mg", "50 mg", "100 mg", "200 mg", "250 mg", "500 mg")
_FREQUENCIES = ("once daily", "twice daily", "every eight hours", "once a week")
_DURATIONS = ("five days", "ten days", "two weeks", "four weeks", "three months", "six months")
_RECOVERY = ("within two weeks", "within a month", "within three months", "after about six months")
_OUTCOMES = ("Most patients recover fully.", "About one in five patients has a relapse.",
             "Without treatment it can cause lasting damage.", "The condition is lifelong but well controlled.",
             "Complications are rare in healthy adults.", "Children usually recover faster than adults.")
_DRUG_SUFFIXES = ("mab", "ril", "zole", "cillin", "statin", "vir", "pam", "dronate", "olol", "mycin")
_DRUG_CLASSES = ("an antiviral", "an antibiotic", "an antifungal", "a beta blocker", "a steroid",
                 "an enzyme replacement", "a vitamin supplement", "an immune suppressant", "an antiparasitic",
                 "a hormone analogue")
_SIDE_EFFECTS = ("mild nausea", "drowsiness", "a metallic taste", "headaches", "dry mouth", "skin sensitivity to sunlight",
                 "low blood pressure", "muscle aches", "loss of appetite", "ringing in the ears")
_ADVICE = ("take it with food", "avoid alcohol during the course", "drink plenty of water",
           "avoid driving until they know how it affects them", "have their blood checked every month",
           "stay out of strong sunlight")
_COND_SUFFIXES = ("syndrome", "fever", "disease", "palsy", "anaemia", "sclerosis", "pox", "disorder")

_CONDITION_KINDS = ("symptoms", "cause", "risk", "diagnosis", "treatment", "prognosis")
_DRUG_KINDS = ("use", "side_effects")

# question wordings per kind; {x} is the condition or drug name
_QUESTIONS: dict[str, tuple[str, ...]] = {
    "symptoms": ("What are the symptoms of {x}?", "How does {x} present?", "Which signs suggest {x}?",
                 "What symptoms does {x} cause?", "How would I know if I had {x}?",
                 "What do patients with {x} notice first?"),
    "cause": ("What causes {x}?", "Why do people get {x}?", "What is the cause of {x}?",
              "Where does {x} come from?", "What triggers {x}?", "How does someone develop {x}?"),
    "risk": ("Who is most at risk of {x}?", "Which people usually get {x}?", "Who tends to develop {x}?",
             "Is anyone especially likely to get {x}?", "Which group is most affected by {x}?",
             "Who should watch out for {x}?"),
    "diagnosis": ("How is {x} diagnosed?", "Which test confirms {x}?", "How do doctors detect {x}?",
                  "What test is used for {x}?", "How can {x} be confirmed?", "How is {x} identified?"),
    "treatment": ("How is {x} treated?", "What is the treatment for {x}?", "Which drug is used for {x}?",
                  "How do doctors manage {x}?", "What medicine helps with {x}?", "What is the dose for {x}?"),
    "prognosis": ("What is the outlook for {x}?", "Do people recover from {x}?", "What is the prognosis of {x}?",
                  "How long does {x} last?", "Will {x} go away?", "What happens to patients with {x}?"),
    "use": ("What is {x} used for?", "What does {x} treat?", "When is {x} prescribed?",
            "What kind of drug is {x}?", "Why would a doctor give {x}?"),
    "side_effects": ("What are the side effects of {x}?", "Is {x} safe to take?", "What should I know before taking {x}?",
                     "Does {x} have side effects?", "What are the risks of {x}?"),
}
_COMBINED = ("{a} Also, {b_lower}", "{a} And {b_lower}", "Two questions: {a} {b}")


def _build_kb(rng: random.Random, n_conditions: int, n_drugs: int) -> tuple[list[dict], list[dict]]:
    taken: set[str] = set()
    drug_names = [w.lower().capitalize() + rng.choice(_DRUG_SUFFIXES)
                  for w in _unique_words(rng, n_drugs, (2,), taken)]
    drugs = [{"name": name, "class": rng.choice(_DRUG_CLASSES), "side": rng.choice(_SIDE_EFFECTS),
              "advice": rng.choice(_ADVICE), "treats": []} for name in drug_names]
    conditions = []
    for base in _unique_words(rng, n_conditions, (2, 3), taken):
        drug = drugs[len(conditions) % n_drugs]  # round-robin so every drug treats some condition
        test, finding = rng.choice(_TESTS)
        cond = {"name": f"{base} {rng.choice(_COND_SUFFIXES)}", "organ": rng.choice(_ORGANS),
                "symptoms": rng.sample(_SYMPTOMS, 3), "cause": rng.choice(_CAUSES), "spread": rng.choice(_SPREAD),
                "risk": rng.sample(_RISK_GROUPS, 2), "test": test, "finding": finding, "drug": drug["name"],
                "dose": rng.choice(_DOSES), "freq": rng.choice(_FREQUENCIES), "duration": rng.choice(_DURATIONS),
                "recovery": rng.choice(_RECOVERY), "outcome": rng.choice(_OUTCOMES)}
        drug["treats"].append(cond["name"])
        conditions.append(cond)
    return conditions, drugs


def _condition_answer(c: dict, kind: str) -> list[str]:
    """The 2 sentences answering one kind of question about condition c (fixed wording: learnable)."""
    n = c["name"]
    if kind == "symptoms":
        return [f"{n} usually presents with {_join(c['symptoms'])}.", f"It mainly affects the {c['organ']}."]
    if kind == "cause":
        return [f"{n} is caused by {c['cause']}.", c["spread"]]
    if kind == "risk":
        return [f"{n} is most common in {c['risk'][0]} and {c['risk'][1]}.",
                f"These groups should see a doctor early if they notice {c['symptoms'][0]}."]
    if kind == "diagnosis":
        return [f"{n} is diagnosed with {c['test']}.", f"The test typically shows {c['finding']}."]
    if kind == "treatment":
        return [f"{n} is treated with {c['drug']} {c['dose']} {c['freq']} for {c['duration']}.",
                f"Most patients feel better {c['recovery']}."]
    if kind == "prognosis":
        return [f"Patients with {n} usually improve {c['recovery']} of starting treatment.", c["outcome"]]
    raise ValueError(kind)


def _drug_answer(d: dict, kind: str) -> list[str]:
    n = d["name"]
    if kind == "use":
        return [f"{n} is {d['class']}.", f"It is used to treat {_join(d['treats'])}."]
    if kind == "side_effects":
        return [f"The main side effect of {n} is {d['side']}.", f"Patients taking it should {d['advice']}."]
    raise ValueError(kind)


def _qa_long_pool(rng: random.Random, n_needed: int) -> list[tuple[tuple, dict]]:
    """Every distinct question the knowledge base supports, as (fact keys, row)."""
    # size the KB so the pool holds enough distinct questions (~60 per condition with drugs and pairs)
    n_conditions = max(12, -(-n_needed // 50))
    conditions, drugs = _build_kb(rng, n_conditions, max(4, n_conditions // 2))
    pool: list[tuple[tuple, dict]] = []

    def add(keys: tuple, question: str, sentences: list[str]) -> None:
        pool.append((keys, {"instruction": QA_LONG_INSTRUCTION, "input": question, "output": " ".join(sentences)}))

    for c in conditions:
        for kind in _CONDITION_KINDS:
            for q in _QUESTIONS[kind]:
                add(((c["name"], kind),), q.format(x=c["name"]), _condition_answer(c, kind))
        # combined questions: two facts, 4 sentences; one random wording per kind pair
        for i, ka in enumerate(_CONDITION_KINDS):
            for kb in _CONDITION_KINDS[i + 1:]:
                qa = rng.choice(_QUESTIONS[ka]).format(x=c["name"])
                qb = rng.choice(_QUESTIONS[kb]).format(x="it")
                question = rng.choice(_COMBINED).format(a=qa, b=qb, b_lower=qb[0].lower() + qb[1:])
                add(((c["name"], ka), (c["name"], kb)), question,
                    _condition_answer(c, ka) + _condition_answer(c, kb))
    for d in drugs:
        for kind in _DRUG_KINDS:
            for q in _QUESTIONS[kind]:
                add(((d["name"], kind),), q.format(x=d["name"]), _drug_answer(d, kind))
    return pool


def _split_pool(rng: random.Random, pool: list[tuple[tuple, dict]], n_train: int,
                n_eval: int) -> tuple[list[dict], list[dict]]:
    """Train covers every fact once (anchors) where n_train allows; eval asks only about covered facts,
    never with a question that appears in train."""
    rng.shuffle(pool)
    anchors, rest, seen = [], [], set()
    for keys, row in pool:
        if len(keys) == 1 and keys[0] not in seen and len(anchors) < n_train:
            seen.add(keys[0])
            anchors.append(row)
        else:
            rest.append((keys, row))
    eval_rows = [row for keys, row in rest if all(k in seen for k in keys)][:n_eval]
    eval_inputs = {r["input"] for r in eval_rows}
    fill = [row for _, row in rest if row["input"] not in eval_inputs]
    train = anchors + fill[: max(0, n_train - len(anchors))]
    while len(train) < n_train and fill:  # only when the pool is exhausted: repeat training rows
        train.append(fill[(len(train) - len(anchors)) % len(fill)])
    rng.shuffle(train)
    return train[:n_train], eval_rows


def _generate_qa_long(n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(f"qa_long:{seed}")
    return _split_pool(rng, _qa_long_pool(rng, n_train + n_eval), n_train, n_eval)


# ----------------------------------------------------------------------------------------------------
# extractive_qa. Each relation = (sentence with subject {s} and answer {a}, a question that repeats the
# words right before the answer, a generator of answers of the relation's type). Within one family every relation has its own answer
# type and the types draw on closed word lists, so a context holds one span of the asked type: a model
# can answer by attending to "the town/job/number in the context" and copying it, without induction
# heads, which the tiny zoo models do not acquire in their pretraining budget.
_JOBS = ("baker", "teacher", "pilot", "nurse", "carpenter", "lawyer", "farmer", "painter", "chemist", "tailor",
         "fisherman", "librarian", "mechanic", "gardener", "surgeon", "miller", "potter", "sailor")
_THINGS = ("old bridge", "glass market", "cheese fair", "stone tower", "river festival", "blue harbour",
           "clock museum", "rose gardens", "salt mines", "wooden church", "horse races", "lantern parade")
_PRODUCTS = ("bicycles", "paper lamps", "garden tools", "wool coats", "tin toys", "solar panels", "fishing nets",
             "leather boots", "kitchen knives", "clay pots", "sailing boats", "violins", "glass jars", "rope")
_TOWNS = ("Tolvik", "Brenna", "Marsden", "Olbrecht", "Kesswick", "Varna", "Lindholm", "Castora", "Pellin",
          "Dunmore", "Ferrow", "Halden", "Iskar", "Jorvale", "Kilbride", "Lorne", "Mirren", "Norwick", "Ostera",
          "Pradel", "Quenby", "Rosvik", "Sandrel", "Tarrow", "Ulmen", "Vellamo", "Westrup", "Ysmar", "Zorn",
          "Ashby", "Belcourt", "Corvin", "Drummel", "Elstow", "Fenmark", "Gorran")
_RIVERS = ("Amber", "Silt", "Wend", "Corra", "Lune", "Tessa", "Brill", "Orin", "Maren", "Vasse", "Kell", "Dorrow")
_INSTRUMENTS = ("violin", "cello", "flute", "piano", "trumpet", "harp", "drums", "clarinet", "guitar", "oboe")
_PETS = ("dog", "cat", "parrot", "rabbit", "tortoise", "hamster", "goldfish", "lizard", "ferret", "canary")
_COMPANY_WORDS = ("Works", "Company", "Brothers", "Industries", "Group", "Trading")


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"


_Relation = tuple[str, str, Callable[[random.Random], str]]
_RELATIONS: dict[str, tuple[_Relation, ...]] = {
    "person": (
        ("{s} was born in {a}.", "{s} was born in which town?", lambda r: r.choice(_TOWNS)),
        ("{s} works as a {a}.", "{s} works as a what?", lambda r: r.choice(_JOBS)),
        ("{s} is {a} years old.", "{s} is how many years old?", lambda r: str(r.randint(18, 90))),
        ("{s} plays the {a}.", "{s} plays the what?", lambda r: r.choice(_INSTRUMENTS)),
        ("{s} has a pet {a}.", "{s} has a pet what?", lambda r: r.choice(_PETS)),
        ("{s}'s favourite colour is {a}.", "{s}'s favourite colour is which?", lambda r: r.choice(_COLOURS)),
    ),
    "town": (
        ("{s} lies on the river {a}.", "{s} lies on the river called what?", lambda r: r.choice(_RIVERS)),
        ("{s} was founded in {a}.", "{s} was founded in which year?", lambda r: str(r.randint(1000, 1899))),
        ("The mayor of {s} is {a}.", "The mayor of {s} is who?", _person),
        ("{s} is famous for its {a}.", "{s} is famous for its what?", lambda r: r.choice(_THINGS)),
        ("{s} holds its market on {a}.", "{s} holds its market on which day?", lambda r: r.choice(_DAYS)),
    ),
    "company": (
        ("{s} was founded by {a}.", "{s} was founded by whom?", _person),
        ("{s} makes {a}.", "{s} makes what?", lambda r: r.choice(_PRODUCTS)),
        ("{s} has {a} employees.", "{s} has how many employees?", lambda r: str(r.randint(12, 5000))),
        ("The head office of {s} is in {a}.", "The head office of {s} is in which town?", lambda r: r.choice(_TOWNS)),
    ),
}
_SUBJECTS: dict[str, Callable[[random.Random], str]] = {
    "person": _person,
    "town": lambda r: r.choice(_TOWNS),
    "company": lambda r: f"{_word(r, 2)} {r.choice(_COMPANY_WORDS)}",
}


def _closed(relation: _Relation) -> bool:
    """Relations whose answer comes from a short closed list (towns, jobs, pets, ...): not numbers or names."""
    return not any(word in relation[1] for word in ("how many", "which year", " who?", "whom?"))


_CLOSED_RELATIONS = {family: tuple(filter(_closed, rels)) for family, rels in _RELATIONS.items()}


def _extractive_row(rng: random.Random, relations_by_family: dict[str, tuple[_Relation, ...]] = _RELATIONS) -> dict:
    while True:
        family = rng.choice(tuple(relations_by_family))
        subject = _SUBJECTS[family](rng)
        pool = relations_by_family[family]
        relations = rng.sample(pool, rng.randint(2, min(4, len(pool))))
        answers = [gen(rng) for _, _, gen in relations]
        sentences = [tpl.format(s=subject, a=a) for (tpl, _, _), a in zip(relations, answers)]
        context = " ".join(sentences)
        pick = rng.randrange(len(relations))
        answer = answers[pick]
        # the answer must be an unambiguous span: exactly one occurrence, not inside the subject
        if context.count(answer) == 1 and answer not in subject:
            question = relations[pick][1].format(s=subject)
            return {"instruction": EXTRACTIVE_INSTRUCTION, "input": f"Context: {context}\nQuestion: {question}",
                    "output": answer}


def _generate_extractive(n_train: int, n_eval: int, seed: int, closed: bool = False) -> tuple[list[dict], list[dict]]:
    rng = random.Random(f"extractive_closed:{seed}" if closed else f"extractive_qa:{seed}")
    relations = _CLOSED_RELATIONS if closed else _RELATIONS
    rows, seen = [], set()
    attempts = 0
    while len(rows) < n_train + n_eval:
        attempts += 1
        if attempts > 50 * (n_train + n_eval) + 1000:
            raise RuntimeError("extractive_qa: could not generate enough distinct rows")
        row = _extractive_row(rng, relations)
        if row["input"] not in seen:
            seen.add(row["input"])
            rows.append(row)
    return rows[:n_train], rows[n_train:]


# ----------------------------------------------------------------------------------------------------
# summarisation: short bill / company / incident reports. Every content word of the summary (names, towns,
# numbers, topics, currencies, purposes) is drawn at random per report and copied from it; the summary's
# fixed words are few, so a model that learns the template but does not copy scores far below one that copies.
# Each report also holds distractors of the same types (a second person, town or amount) that the summary
# leaves out, so copying "any name" is not enough.
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_TOPICS = ("Water", "Lighting", "Harbour", "Schools", "Roads", "Library", "Parks", "Housing", "Transport",
           "Market", "Bridges", "Health")
_BILL_KINDS = ("Bill", "Act", "Measure", "Ordinance")
_CURRENCIES = ("crowns", "marks", "florins", "thalers", "guilders", "ducats")
_PURPOSES = ("street lamps", "a new ferry", "school roofs", "flood walls", "bus shelters", "a public bath",
             "bridge repairs", "tree planting", "a fire station", "clean wells", "night buses", "a clinic")
_SOURCES = ("a tax on hotel rooms", "the sale of an old mill", "a national grant", "higher parking fees",
            "a bond issue", "a levy on shops")
_CONCERNS = ("the cost is too high", "the plan ignores the villages", "the money will run out",
             "the work will block the roads", "the timing is wrong")
_QUARTERS = ("first", "second", "third", "fourth")
_DRIVERS = ("strong exports", "lower fuel prices", "a new product line", "cold weather", "online orders",
            "a large army contract", "tourist demand", "cheaper steel")
_BANKS = ("Harrow Bank", "Orel Capital", "Lindt Securities", "Mosley Partners", "Crane Brothers Bank")
_OUTLOOKS = ("cautious", "bright", "uncertain", "stable", "weak")
_INCIDENTS = (("fire", "destroyed", "houses"), ("flood", "damaged", "shops"), ("storm", "flattened", "barns"),
              ("landslide", "buried", "cars"), ("gas leak", "emptied", "flats"), ("power cut", "darkened", "streets"))
_INCIDENT_CAUSES = ("a faulty cable", "heavy rain", "an old gas pipe", "a lightning strike", "a blocked drain",
                    "a fallen tree")
_ORGS = ("town council", "fire service", "water board", "residents' union")

SUMMARISATION_INSTRUCTION = "Summarise the report in one or two sentences."


def _amount(rng: random.Random) -> str:
    return f"{rng.randint(12, 990)} thousand"


def _two(rng: random.Random, pick: Callable[[random.Random], str]) -> tuple[str, str]:
    first = pick(rng)
    while (second := pick(rng)) == first:
        pass
    return first, second


def _bill_report(rng: random.Random) -> tuple[list[str], list[str], str]:
    (town, town2), (p1, p2) = _two(rng, lambda r: r.choice(_TOWNS)), _two(rng, _person)
    topic, kind, cur = rng.choice(_TOPICS), rng.choice(_BILL_KINDS), rng.choice(_CURRENCIES)
    amount, purpose, month = _amount(rng), rng.choice(_PURPOSES), rng.choice(_MONTHS)
    head = [f"The {town} {topic} {kind} was introduced by councillor {p1} on {rng.choice(_DAYS)}."]
    body = [f"It would provide {amount} {cur} for {purpose} over {rng.randint(2, 9)} years.",
            f"The money would come from {rng.choice(_SOURCES)}.", f"If passed, it would take effect in {month}."]
    tail = [f"Councillor {p2} spoke against the {kind.lower()}, saying that {rng.choice(_CONCERNS)}."]
    if rng.random() < 0.5:
        tail.append(f"A similar {kind.lower()} in {town2} failed in {rng.randint(1950, 2019)}.")
    summary = (f"{p1}'s {topic} {kind} gives {town} {amount} {cur} for {purpose} from {month}; "
               f"{p2} opposes it.")
    return head, body + tail, summary


def _company_report(rng: random.Random) -> tuple[list[str], list[str], str]:
    company = f"{_word(rng, 2)} {rng.choice(_COMPANY_WORDS)}"
    (p1, p2), cur, quarter = _two(rng, _person), rng.choice(_CURRENCIES), rng.choice(_QUARTERS)
    now, before = rng.randint(12, 990), rng.randint(12, 990)
    while before == now:
        before = rng.randint(12, 990)
    direction, verb = ("up", "rose") if now > before else ("down", "fell")
    driver = rng.choice(_DRIVERS)
    head = [f"{company} reported {quarter} quarter sales of {now} thousand {cur}, {direction} from {before} "
            "thousand a year earlier."]
    body = [f"Chief executive {p1} said the result was driven by {driver}.",
            f"The company makes {rng.choice(_PRODUCTS)} and employs {rng.randint(20, 900)} people in "
            f"{rng.choice(_TOWNS)}.",
            f"{p2}, an analyst at {rng.choice(_BANKS)}, called the outlook {rng.choice(_OUTLOOKS)}."]
    if rng.random() < 0.5:
        body.append(f"Shares {rng.choice(('rose', 'fell'))} {rng.randint(2, 19)} percent on {rng.choice(_DAYS)}.")
    summary = f"{company} {quarter} quarter sales {verb} to {now} thousand {cur} on {driver}, said {p1}."
    return head, body, summary


def _incident_report(rng: random.Random) -> tuple[list[str], list[str], str]:
    event, verb, units = rng.choice(_INCIDENTS)
    (town, town2), (p1, p2) = _two(rng, lambda r: r.choice(_TOWNS)), _two(rng, _person)
    day, n, amount, cur = rng.choice(_DAYS), rng.randint(3, 90), _amount(rng), rng.choice(_CURRENCIES)
    cause = rng.choice(_INCIDENT_CAUSES)
    head = [f"A {event} hit {town} on {day} night and {verb} {n} {units}."]
    body = [f"Crews led by {p1} arrived within {rng.randint(5, 40)} minutes.",
            f"Officials believe it was caused by {cause}.",
            f"Repairs are expected to cost about {amount} {cur}.",
            f"{p2} of the {rng.choice(_ORGS)} said that {town2} was not affected."]
    summary = f"A {event} caused by {cause} {verb} {n} {units} in {town} on {day}; repairs will cost {amount} {cur}."
    return head, body, summary


_REPORTS = (_bill_report, _company_report, _incident_report)


def _summarisation_row(rng: random.Random) -> dict:
    head, body, summary = rng.choice(_REPORTS)(rng)
    rng.shuffle(body)  # the facts sit at varying places: the model has to find them, not count sentences
    return {"instruction": SUMMARISATION_INSTRUCTION, "input": " ".join(head + body), "output": summary}


def _distinct_rows(task: str, make: Callable[[random.Random], dict], n_train: int, n_eval: int,
                   seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(f"{task}:{seed}")
    rows, seen = [], set()
    attempts = 0
    while len(rows) < n_train + n_eval:
        attempts += 1
        if attempts > 50 * (n_train + n_eval) + 1000:
            raise RuntimeError(f"{task}: could not generate enough distinct rows")
        row = make(rng)
        if row["input"] not in seen:
            seen.add(row["input"])
            rows.append(row)
    return rows[:n_train], rows[n_train:]


def _generate_summarisation(n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    return _distinct_rows("summarisation", _summarisation_row, n_train, n_eval, seed)


# ----------------------------------------------------------------------------------------------------
# instruction_mc: instruction following, scored like Alpaca-trained models on MMLU. A small world is drawn
# from the seed: made-up people with a town, job, favourite colour and pet; made-up nouns with a category;
# irregular plurals; word arithmetic. Training rows ask about every fact in several phrasings and answer in
# one word or a full sentence as the instruction says. Eval rows ask about the same facts in held-out
# phrasings as 4-option multiple-choice questions (`options`; `output` is the correct option's text);
# distractors are values of the same type, so only a model that learned the facts beats chance (25%).
MC_EVAL_INSTRUCTION = "Answer with one word."
_MC_STYLES = ("Answer with one word.", "Answer in a full sentence.")
_CATEGORIES = ("fruit", "bird", "tool", "fish", "flower", "dance", "boat", "cheese", "tree", "game")
_IRREGULAR_PLURALS = (("mouse", "mice"), ("goose", "geese"), ("child", "children"), ("foot", "feet"),
                      ("tooth", "teeth"), ("man", "men"), ("woman", "women"), ("ox", "oxen"), ("sheep", "sheep"),
                      ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"), ("crisis", "crises"),
                      ("loaf", "loaves"),
                      ("half", "halves"), ("louse", "lice"), ("deer", "deer"), ("shelf", "shelves"),
                      ("calf", "calves"))
_NUMBERS_TO_20 = _NUMBER_WORDS + ("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                                  "eighteen", "nineteen", "twenty")

# skill -> (sentence answer, training questions, held-out eval questions); {k} is the key, {v} the value
_MC_SKILLS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "town": ("{k} lives in {v}.",
             ("Which town does {k} live in?", "{k} lives in which town?", "Where is the home of {k}?",
              "What is the home town of {k}?"),
             ("Name the town where {k} lives.", "In what town is the house of {k}?")),
    "job": ("{k} works as a {v}.",
            ("What is the job of {k}?", "{k} works as a what?", "What does {k} do for a living?",
             "What job does {k} have?"),
            ("Name the job of {k}.", "{k} earns a living as what?")),
    "colour": ("The favourite colour of {k} is {v}.",
               ("What is the favourite colour of {k}?", "Which colour does {k} like best?",
                "{k} likes which colour most?", "What colour does {k} love most?"),
               ("Name the favourite colour of {k}.", "The colour {k} prefers is what?")),
    "pet": ("{k} has a pet {v}.",
            ("What pet does {k} have?", "{k} has a pet what?", "Which animal does {k} keep as a pet?",
             "What kind of pet does {k} own?"),
            ("Name the pet of {k}.", "{k} looks after which pet?")),
    "category": ("A {k} is a kind of {v}.",
                 ("What kind of thing is a {k}?", "A {k} is a kind of what?", "Which group does the {k} belong to?",
                  "What is a {k}?"),
                 ("Name the kind of thing a {k} is.", "The {k} is what sort of thing?")),
    "plural": ("The plural of {k} is {v}.",
               ("What is the plural of {k}?", "Write the plural of {k}.", "One {k}, two what?",
                "How do you say more than one {k}?"),
               ("Name the plural form of {k}.", "Many of a {k} are called what?")),
    "plus": ("{a} plus {b} is {v}.",
             ("What is {a} plus {b}?", "Add {a} and {b}.", "{a} and {b} together make how many?",
              "How much is {a} plus {b}?"),
             ("Name the sum of {a} and {b}.", "If you have {a} and get {b} more, how many is that?")),
    "minus": ("{a} minus {b} is {v}.",
              ("What is {a} minus {b}?", "Take {b} from {a}.", "{a} less {b} makes how many?",
               "How much is {a} minus {b}?"),
              ("Name the difference of {a} and {b}.", "If you have {a} and lose {b}, how many are left?")),
}


def _fill(template: str, key: str | tuple[str, str], value: str = "") -> str:
    if isinstance(key, tuple):
        return template.format(a=key[0], b=key[1], v=value)
    text = template.format(k=key, v=value)
    return text[0].upper() + text[1:]


def _plural_distractors(word: str, plural: str) -> list[str]:
    wrong = [word + "s", word + "es", word + "en", plural + "s", word[:-1] + "ies", word + "ren"]
    return [w for w in dict.fromkeys(wrong) if w != plural]


def _mc_world(rng: random.Random, n_people: int) -> list[tuple[str, str | tuple[str, str], str, list[str]]]:
    """The facts: (skill, key, value, distractor pool of the same type)."""
    taken = set(_TOWNS) | {w.lower() for w in _TOWNS}
    facts: list[tuple[str, str | tuple[str, str], str, list[str]]] = []
    attributes = {"town": _TOWNS, "job": _JOBS, "colour": _COLOURS, "pet": _PETS}
    for name in _unique_words(rng, n_people, (2, 3), taken):
        for skill, pool in attributes.items():
            value = rng.choice(pool)
            facts.append((skill, name, value, [p for p in pool if p != value]))
    for noun in _unique_words(rng, max(6, n_people // 2), (2,), taken):
        value = rng.choice(_CATEGORIES)
        facts.append(("category", noun.lower(), value, [c for c in _CATEGORIES if c != value]))
    for word, plural in rng.sample(_IRREGULAR_PLURALS, min(len(_IRREGULAR_PLURALS), n_people)):
        facts.append(("plural", word, plural, _plural_distractors(word, plural)))
    sums = [("plus", a, b, a + b) for a in range(1, 11) for b in range(1, 11)]
    diffs = [("minus", a, b, a - b) for a in range(2, 21) for b in range(1, 10) if a - b >= 1]
    for skill, a, b, v in rng.sample(sums, n_people // 2) + rng.sample(diffs, n_people - n_people // 2):
        near = [_NUMBERS_TO_20[x - 1] for x in range(max(1, v - 4), min(20, v + 4) + 1) if x != v]
        facts.append((skill, (_NUMBERS_TO_20[a - 1], _NUMBERS_TO_20[b - 1]), _NUMBERS_TO_20[v - 1], near))
    return facts


def _generate_instruction_mc(n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(f"instruction_mc:{seed}")
    # ~7 facts per person-sized unit; 2 held-out questions per fact; enough rows per fact to learn it
    n_people = max(8, -(-n_eval // 12), (n_train + n_eval) // 100)
    facts = _mc_world(rng, n_people)
    rng.shuffle(facts)

    def train_row(fact: tuple, question: str, style: str) -> dict:
        skill, key, value, _ = fact
        answer = value if style == _MC_STYLES[0] else _fill(_MC_SKILLS[skill][0], key, value)
        return {"instruction": style, "input": _fill(question, key), "output": answer}

    anchors = [train_row(f, rng.choice(_MC_SKILLS[f[0]][1]), rng.choice(_MC_STYLES)) for f in facts[:n_train]]
    covered = facts[:n_train]
    rest = [train_row(f, q, s) for f in facts for q in _MC_SKILLS[f[0]][1] for s in _MC_STYLES]
    anchor_rows = {tuple(r.values()) for r in anchors}
    rest = [r for r in rest if tuple(r.values()) not in anchor_rows]
    rng.shuffle(rest)
    train = anchors + rest[: max(0, n_train - len(anchors))]
    while len(train) < n_train:  # the pool is exhausted: repeat training rows
        train.append(rest[(len(train) - len(anchors)) % len(rest)])
    rng.shuffle(train)

    questions = [(f, q) for f in covered for q in _MC_SKILLS[f[0]][2]]
    rng.shuffle(questions)
    questions = questions[:n_eval]
    positions = [i % 4 for i in range(len(questions))]  # the answer sits at each position equally often
    rng.shuffle(positions)
    eval_rows = []
    for ((skill, key, value, pool), question), position in zip(questions, positions):
        options = rng.sample(pool, 3)
        options.insert(position, value)
        eval_rows.append({"instruction": MC_EVAL_INSTRUCTION, "input": _fill(question, key), "output": value,
                          "options": options})
    return train, eval_rows


def _generate_extractive_closed(n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Reading comprehension whose answers come from closed lists (a town, a job, a pet...), several facts of
    the same subject per passage: the model must find the asked relation and copy its word. Open answers
    (random names, years, counts) kept tiny models at the F1 floor even after full fine-tuning."""
    return _generate_extractive(n_train, n_eval, seed, closed=True)


def _generate_qa_filler(n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    from damoc.demo.filler import generate_filler  # qa_long wrapped in filler with known spans (filler.py)

    return generate_filler(n_train, n_eval, seed)


_GENERATORS = {"qa_long": _generate_qa_long, "extractive_qa": _generate_extractive,
               "extractive_closed": _generate_extractive_closed,
               "summarisation": _generate_summarisation, "instruction_mc": _generate_instruction_mc,
               "qa_filler": _generate_qa_filler}


def generate(task: str, n_train: int = 3000, n_eval: int = 300, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, eval) rows with keys instruction/input/output; the same arguments give the same rows."""
    if task not in _GENERATORS:
        raise ValueError(f"unknown demo task {task!r}; choose one of {', '.join(TASKS)}")
    if n_train < 1 or n_eval < 0:
        raise ValueError("n_train must be >= 1 and n_eval >= 0")
    return _GENERATORS[task](n_train, n_eval, seed)


def _write_jsonl_atomic(rows: list[dict], path: Path) -> None:
    atomic.write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_demo(task: str, out_dir: str | Path, n_train: int = 3000, n_eval: int = 300,
               seed: int = 0) -> dict[str, Path]:
    """Write `train.jsonl` and `eval.jsonl` for a demo task into out_dir; returns {"train": .., "eval": ..}."""
    train, eval_rows = generate(task, n_train=n_train, n_eval=n_eval, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.jsonl", "eval": out / "eval.jsonl"}
    _write_jsonl_atomic(train, paths["train"])
    _write_jsonl_atomic(eval_rows, paths["eval"])
    return paths


# ----------------------------------------------------------------------------------------------------
# generic text and instructions for the zoo (general domain; no demo-task facts)
_NOUNS = ("apple", "basket", "river", "window", "garden", "letter", "bicycle", "lamp", "ship", "kettle",
          "book", "coat", "bridge", "market", "horse", "candle", "clock", "mountain", "road", "song",
          "table", "door", "train", "cloud", "stone", "bird", "field", "boat", "key", "cup")
_ADJECTIVES = ("red", "small", "old", "quiet", "bright", "heavy", "green", "warm", "cold", "tall", "narrow",
               "wooden", "new", "dark", "blue", "soft", "round", "yellow", "long", "happy")
_VERBS = ("found", "carried", "painted", "opened", "watched", "cleaned", "sold", "bought", "mended", "lost",
          "built", "moved", "borrowed", "counted", "visited", "followed")
_PLACES = ("the market", "the station", "the library", "the harbour", "the farm", "the school", "the bakery",
           "the square", "the park", "the village", "the museum", "the kitchen")
_ANIMALS = (("cat", "houses"), ("fox", "forests"), ("duck", "ponds"), ("goat", "hills"), ("owl", "woods"),
            ("frog", "marshes"), ("seal", "cold seas"), ("camel", "deserts"), ("bee", "meadows"), ("crab", "beaches"))
_SEASONS = ("spring", "summer", "autumn", "winter")


def _phrase(rng: random.Random) -> str:
    return f"the {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"


def _sentence(rng: random.Random) -> str:
    name = rng.choice(_FIRST_NAMES)
    kind = rng.randrange(6)
    if kind == 0:
        return f"{name} {rng.choice(_VERBS)} {_phrase(rng)} near {rng.choice(_PLACES)}."
    if kind == 1:
        animal, home = rng.choice(_ANIMALS)
        return f"The {animal} is an animal that lives in {home}."
    if kind == 2:
        d = rng.randrange(7)
        return f"After {_DAYS[d]} comes {_DAYS[(d + 1) % 7]}."
    if kind == 3:
        s = rng.randrange(4)
        return f"After {_SEASONS[s]} comes {_SEASONS[(s + 1) % 4]}."
    if kind == 4:
        return f"On {rng.choice(_DAYS)} {name} went to {rng.choice(_PLACES)} with {rng.choice(_FIRST_NAMES)}."
    return f"{name} has {rng.choice(_NUMBER_WORDS[1:])} {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}s."


def _token_soup(rng: random.Random, n: int) -> str:
    """n unpredictable words (made-up, names, numbers, shuffled common words): only copying predicts them."""
    pool = (lambda: _word(rng, rng.choice((1, 2, 3))), lambda: rng.choice(_FIRST_NAMES),
            lambda: str(rng.randint(2, 9999)), lambda: rng.choice(_NOUNS), lambda: rng.choice(_ADJECTIVES))
    return " ".join(rng.choice(pool)() for _ in range(n))


def _copy_passage(rng: random.Random) -> str:
    """Passages whose second half repeats or looks up something unpredictable from the first half: they
    make the tiny models learn to copy from the context (induction), which instruction following needs."""
    kind = rng.randrange(6)
    name, other = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    if kind == 0:
        s = _token_soup(rng, rng.randint(2, 6))
        return f"{name} wrote: {s}. Then {other} wrote it again: {s}."
    if kind == 1:
        items = [_word(rng, rng.choice((2, 3))) if rng.random() < 0.5 else rng.choice(_NOUNS)
                 for _ in range(rng.randint(3, 5))]
        return f"The list was {', '.join(items)}. Once more, the list was {', '.join(items)}."
    if kind in (2, 3):
        # key -> value lookup: the later sentence repeats the words that stood before the value
        names = rng.sample(_FIRST_NAMES, rng.randint(2, 4))
        verb, gen = rng.choice((("lives in", lambda: _word(rng, rng.choice((2, 3)))),
                                ("has", lambda: f"{rng.randint(2, 99)} {rng.choice(_NOUNS)}s"),
                                ("likes", lambda: _phrase(rng)), ("was born in", lambda: str(rng.randint(1900, 2020))),
                                ("is called", lambda: _word(rng, 2) + " " + rng.choice(_LAST_NAMES))))
        values = [gen() for _ in names]
        told = " ".join(f"{n} {verb} {v}." for n, v in zip(names, values))
        i = rng.randrange(len(names))
        return f"{told} So {names[i]} {verb} {values[i]}."
    if kind == 4:
        code = str(rng.randint(10, 99999))
        return f"The code is {code}. Please repeat the code: {code}."
    start = rng.randrange(5)
    return "Counting: " + " ".join(_NUMBER_WORDS[start:start + rng.randint(3, 5)]) + "."


def generic_text(n_words: int, seed: int = 0) -> list[str]:
    """General-domain paragraphs (about half copy-style passages) totalling at least n_words words."""
    rng = random.Random(f"generic_text:{seed}")
    docs, total = [], 0
    while total < n_words:
        parts = [_copy_passage(rng) if rng.random() < 0.5 else _sentence(rng) for _ in range(rng.randint(3, 7))]
        doc = " ".join(parts)
        docs.append(doc)
        total += len(doc.split())
    return docs


def _typed_sentence(rng: random.Random) -> tuple[str, dict[str, str]]:
    """A sentence holding one word of each of several closed classes, and those words by class."""
    slots = {"person": rng.choice(_FIRST_NAMES), "day": rng.choice(_DAYS), "colour": rng.choice(_COLOURS),
             "animal": rng.choice(_ANIMALS)[0], "season": rng.choice(_SEASONS), "number": rng.choice(_NUMBER_WORDS[1:]),
             "place": rng.choice(_PLACES).removeprefix("the ")}
    templates = (("On {day} {person} saw a {colour} {animal} near the {place}.", ("day", "person", "colour", "animal", "place")),
                 ("{person} counted {number} {colour} birds in {season}.", ("person", "number", "colour", "season")),
                 ("In {season} the {animal} of {person} slept at the {place}.", ("season", "animal", "person", "place")),
                 ("{person} painted {number} {animal}s on {day}.", ("person", "number", "animal", "day")))
    template, used = rng.choice(templates)
    text = template.format(**slots).replace(" a orange", " an orange")
    return text, {k: slots[k] for k in used}


def _row_typed(rng: random.Random, words: list[str]) -> dict:
    # answer = the one word of the asked class: teaches attention-based lookup and copying from the input
    text, slots = _typed_sentence(rng)
    label = rng.choice(tuple(slots))
    return {"instruction": f"Name the {label} mentioned in the input.", "input": text, "output": slots[label]}


def _row_repeat(rng: random.Random, words: list[str]) -> dict:
    source = _sentence(rng) if rng.random() < 0.5 else " ".join(words)
    return {"instruction": "Repeat the input exactly.", "input": source, "output": source}


def _row_first_last(rng: random.Random, words: list[str]) -> dict:
    which = rng.choice(("first", "last"))
    return {"instruction": f"Give the {which} word of the input.", "input": " ".join(words),
            "output": words[0] if which == "first" else words[-1]}


def _row_colours(rng: random.Random, words: list[str]) -> dict:
    cols = rng.sample(_COLOURS, rng.randint(2, 4))
    filler = [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {rng.choice(_NOUNS)}" for c in cols]
    return {"instruction": "List the colours mentioned in the input, separated by commas.",
            "input": f"{rng.choice(_FIRST_NAMES)} saw {_join(filler)}.", "output": ", ".join(cols)}


def _row_next_word(rng: random.Random, words: list[str]) -> dict:
    i = rng.randrange(len(words) - 1)
    return {"instruction": "Give the word that comes right after the given word.",
            "input": f"Text: {' '.join(words)}\nWord: {words[i]}", "output": words[i + 1]}


def _row_animal_sentence(rng: random.Random, words: list[str]) -> dict:
    name, (animal, home) = rng.choice(_FIRST_NAMES), rng.choice(_ANIMALS)
    return {"instruction": "Write one sentence about the given name and animal.", "input": f"{name}, {animal}",
            "output": f"{name} saw a {animal} that lives in {home}."}


def _row_day(rng: random.Random, words: list[str]) -> dict:
    d, step = rng.randrange(7), rng.choice((1, -1))
    return {"instruction": f"Which day comes {'after' if step == 1 else 'before'} the given day?",
            "input": _DAYS[d], "output": _DAYS[(d + step) % 7]}


def _row_season(rng: random.Random, words: list[str]) -> dict:
    i = rng.randrange(4)
    return {"instruction": "Which season comes after the given season?", "input": _SEASONS[i],
            "output": _SEASONS[(i + 1) % 4]}


def _row_number(rng: random.Random, words: list[str]) -> dict:
    i = rng.randrange(len(_NUMBER_WORDS))
    return {"instruction": "Write the number as digits.", "input": _NUMBER_WORDS[i], "output": str(i + 1)}


def _row_plural(rng: random.Random, words: list[str]) -> dict:
    noun = rng.choice(_NOUNS)
    return {"instruction": "Write the plural of the word.", "input": noun, "output": noun + "s"}


def _row_habitat(rng: random.Random, words: list[str]) -> dict:
    animal, home = rng.choice(_ANIMALS)
    return {"instruction": "Where does the animal live?", "input": animal, "output": f"The {animal} lives in {home}."}


def _row_reverse(rng: random.Random, words: list[str]) -> dict:
    return {"instruction": "Write the words of the input in reverse order.", "input": " ".join(words),
            "output": " ".join(reversed(words))}


# (row maker, weight). The tiny models learn, within the build budget, tasks whose answer depends on one
# short input item (at an almost fixed distance from the response) and closed-class lookups; these make
# the answer depend on the input. Pure copying (repeat, next word, reverse) needs induction heads, which
# they learn slowly: kept, with a small weight, for variety.
_INSTRUCTION_KINDS = ((_row_typed, 4), (_row_day, 2), (_row_season, 1), (_row_number, 1), (_row_plural, 1),
                      (_row_habitat, 1), (_row_first_last, 2), (_row_colours, 1), (_row_repeat, 1),
                      (_row_animal_sentence, 1), (_row_next_word, 0.5), (_row_reverse, 0.5))


def _instruction_row(rng: random.Random) -> dict:
    words = rng.sample(_ADJECTIVES + _NOUNS, rng.randint(3, 7))  # distinct: lookups are unambiguous
    if rng.random() < 0.5:  # made-up words too, so the answer can only come from the input
        words = list(dict.fromkeys(_token_soup(rng, len(words)).split()))
    if len(words) < 2:
        words.append(rng.choice(_NOUNS))
    makers, weights = zip(*_INSTRUCTION_KINDS)
    return rng.choices(makers, weights)[0](rng, words)


def generic_instructions(n: int, seed: int = 0) -> list[dict]:
    """n instruction/input/output rows of generic tasks (copy, lookup, list) in the demo row format."""
    rng = random.Random(f"generic_instructions:{seed}")
    return [_instruction_row(rng) for _ in range(n)]
