"""A rule-based verb tagger for short English action descriptions (video-grounding queries and answers).

It stands in for ``en_core_web_sm`` where that pipeline cannot be installed. Only what the rewards need is decided:
which tokens are main verbs (``VERB``), which are auxiliaries (``AUX``), and the verb lemma. Other tokens get a
coarse tag (NOUN, ADP, DET, ...) that is good enough to serve as context and should not be relied upon.

How: lemminflect says which words *can* be verbs and gives their lemmas; a left-to-right pass then decides each
ambiguous word (cup, light, drinks, watch, dress ...) from the previous significant token (subject noun, determiner,
preposition, auxiliary, "to", a coordinator ...), the word's inflection, the next token, and two small preference
lists (lexicon.py). The rules are documented inline next to the decisions they make.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import lemminflect

from rewards.nlp import lexicon as lx

# Transparent punctuation: ignored when looking for context ("Person [closes] the door").
_TRANSPARENT = frozenset("[](){}\"'`“”‘’«»-*_<>/\\|")  # single characters
_OBJECT_LIKE = frozenset({"DET", "POSS", "OBJ", "NUM"})


class Lex(NamedTuple):
    """Context-free facts about one lower-cased word."""

    cls: str  # closed class (DET, ADP, BE, ...), PERSON, OPEN (open class) or PUNCT_T / PUNCT_B
    verb: str | None = None  # verb lemma when the word can be a verb
    other: bool = False  # the word also has a noun or adjective reading
    form: str = "base"  # base | s | ing | past
    noun_pref: bool = False
    verb_pref: bool = False
    plural: bool = False  # a plural noun reading ("runners", "others"): a base-form verb may agree with it


_CLOSED: dict[str, str] = {}
for _cls, _words in (
    ("NUM", lx.NUMBER_WORDS),
    ("ADV", lx.ADVERBS),
    ("ADP", lx.ADPOSITIONS),
    ("SCONJ", lx.SUBORDINATORS),
    ("CCONJ", lx.COORDINATORS),
    ("REL", lx.RELATIVES),
    ("OBJ", lx.OBJECT_PRONOUNS),
    ("SUBJ", lx.SUBJECT_PRONOUNS),
    ("POSS", lx.POSSESSIVES),
    ("DET", lx.DETERMINERS),
    ("NEG", lx.NEGATIONS),
    ("MODAL", lx.MODALS),
    ("DO", lx.DO_FORMS),
    ("HAVE", lx.HAVE_FORMS),
    ("BE", lx.BE_FORMS),
):
    for _w in _words:
        _CLOSED[_w] = _cls  # later groups win: "'s" is BE (possessive decided in context), "one" is NUM
_CLOSED["to"] = "TO"
_CLOSED["'s"] = "APOS_S"
_CLOSED["’s"] = "APOS_S"

_AUX_LEMMAS = {"BE": "be", "HAVE": "have", "DO": "do"}


def _form(word: str, lemma: str) -> str:
    if word == lemma:
        return "base"
    if word.endswith("ing"):
        return "ing"
    if word.endswith("s") and not word.endswith("ss"):
        return "s"
    return "past"


@lru_cache(maxsize=65536)
def lex(word: str) -> Lex:
    """Classify one lower-cased token (cached: the vocabulary of queries is small)."""
    if not word or word.isspace():
        # spaCy makes a token of every extra space ("a  cup"): it separates nothing, so it must not end the
        # sentence (which made "cup" a sentence-initial verb).
        return Lex("PUNCT_T")
    if not any(ch.isalnum() for ch in word):
        return Lex("PUNCT_T" if word in _TRANSPARENT else "PUNCT_B")
    closed = _CLOSED.get(word)
    if closed is not None:
        return Lex(closed)
    if word in lx.PERSON_NOUNS:
        return Lex("PERSON")
    if not word.isalpha():
        return Lex("NUM") if any(ch.isdigit() for ch in word) else Lex("OPEN")
    verbs = lemminflect.getAllLemmas(word, upos="VERB").get("VERB")
    nouns = lemminflect.getAllLemmas(word, upos="NOUN").get("NOUN")
    adjs = lemminflect.getAllLemmas(word, upos="ADJ").get("ADJ")
    if not verbs:
        if word.endswith("ly") and not nouns:
            return Lex("ADV")
        known = nouns or adjs or lemminflect.getAllLemmas(word, upos="ADV")
        # Out-of-vocabulary -ing/-ed words ("texting", "vlogged") are verbs in these sentences.
        if not known and len(word) > 5 and word.endswith(("ing", "ed")):
            oov = lemminflect.getAllLemmasOOV(word, upos="VERB").get("VERB")
            if oov:
                return Lex("OPEN", verb=oov[0], form="ing" if word.endswith("ing") else "past")
        noun_lemma = nouns[0] if nouns else word
        return Lex("OPEN", noun_pref=noun_lemma in lx.NOUN_PREFERRING, plural=noun_lemma != word)
    lemma = verbs[0]
    noun_lemma = nouns[0] if nouns else word
    if word in lx.NOUN_PREFERRING and _form(word, lemma) in ("past", "ing"):
        # A household noun that is also an inflected form of another verb: "stove" (stave), "clothing" (clothe).
        return Lex("OPEN", noun_pref=True)
    return Lex(
        "OPEN",
        verb=lemma,
        # A noun-preferring word is a noun even where lemminflect lists no noun reading ("pan").
        other=bool(nouns or adjs) or word in lx.NOUN_PREFERRING,
        form=_form(word, lemma),
        noun_pref=noun_lemma in lx.NOUN_PREFERRING or (word == lemma and word in lx.NOUN_PREFERRING),
        verb_pref=lemma in lx.VERB_PREFERRING,
        plural=bool(nouns) and nouns[0] != word and word.endswith("s"),
    )


def _next_significant(lexes: list[Lex], i: int) -> Lex | None:
    """The next token after ``i`` that is neither transparent punctuation nor an adverb."""
    for j in range(i + 1, len(lexes)):
        if lexes[j].cls not in ("PUNCT_T", "ADV", "NEG"):
            return lexes[j]
    return None


class _State:
    __slots__ = (
        "coord_finite",
        "coord_left",
        "ctx",
        "finite",
        "in_pp",
        "last_verb_form",
        "plural_subject",
        "to_left_verb",
    )

    def __init__(self) -> None:
        self.ctx = "START"  # class of the previous significant token
        self.coord_left = "START"  # ctx before the last coordinator
        self.to_left_verb: str | None = None  # lemma of the verb right before "to"
        self.finite = False  # the current clause already has a finite verb or an auxiliary
        self.coord_finite = False  # ``finite`` before the last coordinator
        self.plural_subject = False  # the previous noun is plural
        self.last_verb_form: str | None = None
        self.in_pp = False  # inside a prepositional phrase: "in the man cave" (no subject there)


def _ambiguous_is_verb(w: Lex, st: _State, nxt: Lex | None) -> bool:
    """Decide a word that has both a verb and a noun/adjective reading."""
    f, ctx = w.form, st.ctx
    nxt_cls = nxt.cls if nxt is not None else "END"
    if ctx in ("START", "SUBJ", "REL"):  # "Drink", "the person drinks", "who cups ..."
        return True
    if ctx == "PP_PERSON":  # "sitting in the man cave" / "talks to the man sitting", "a boy with a man runs"
        return f in ("ing", "past") or (f == "s" and not st.finite)
    if ctx == "AUX_BE":  # "is drinking", "was dressed" / "is open"
        return f in ("ing", "past")
    if ctx == "AUX":  # modal or do-support: "can open", "did not close"
        return f == "base"
    if ctx == "AUX_HAVE":
        return f == "past"
    if ctx in ("DET", "POSS", "NUM", "ADJ"):  # inside a noun phrase: "the light", "his watch"
        return False
    if ctx in ("ADP", "SCONJ"):  # "with a drink" / "after eating", "while holding"
        return f == "ing"
    if ctx == "TO":
        if f != "base":
            return f == "ing"
        if nxt_cls in _OBJECT_LIKE or (nxt_cls == "ADP" and not w.noun_pref):
            return True  # "to light a candle", "to dress up"
        if w.noun_pref:
            return False  # "walks to bed"
        return w.verb_pref or st.to_left_verb in lx.CATENATIVES
    if ctx in ("VERB", "OBJ"):  # "starts laughing", "gets dressed" / "holds cup", "turns light on"
        return f in ("ing", "past")
    if ctx == "NOUN":
        if f in ("ing", "past"):  # "person holding a cup drinking", "a cup filled with water"
            return True
        # "a person holding a phone walks out", "as the runners pass": the clause has no finite verb yet and the
        # form agrees with the noun before it. Otherwise a compound or a list ("coffee cups").
        if st.finite:
            return _asyndetic_verb(w, st, nxt)
        if w.noun_pref:
            # "the red circle sinks." / "the square sinks down": a verbless clause ending in a singular-agreeing
            # form is the verb; "the kitchen sinks are ..." and "coffee cups and plates" stay nouns.
            return f == "s" and not st.plural_subject and nxt_cls in ("END", "PUNCT_B", "ADP", "ADV")
        return f == "s" or (f == "base" and st.plural_subject)
    if ctx == "CCONJ":
        return _coordinated_is_verb(w, st, nxt_cls)
    return w.verb_pref


def _asyndetic_verb(w: Lex, st: _State, nxt: Lex | None) -> bool:
    """A second verb phrase without "and" after a noun: "opens refrigerator grabs milk", "eat a sandwich stand up".

    Only a verb-preferring word in the same tense as the clause's verb, followed by an object or a particle; else
    the word ends a compound or a list ("watches tv shows", "coffee cups").
    """
    if not (w.verb_pref and not w.noun_pref and w.form in ("s", "base") and w.form == st.last_verb_form):
        return False
    if nxt is None:
        return False
    if nxt.cls in _OBJECT_LIKE or nxt.cls == "ADP":
        return True
    return nxt.cls == "OPEN" and (nxt.verb is None or nxt.noun_pref)


def _coordinated_is_verb(w: Lex, st: _State, nxt_cls: str) -> bool:
    """After "and", "or", "then" or a comma: a new verb phrase, or another noun of a list?"""
    f, left = w.form, st.coord_left
    if f in ("ing", "past") or nxt_cls in _OBJECT_LIKE:  # "and drinking", "and cups the water"
        return True
    if left in ("VERB", "ADP", "OBJ", "SUBJ", "AUX_BE"):  # "sits down and drinks", "opens it and walks"
        return not (w.noun_pref and f == "base")
    if w.noun_pref:  # "holds a cup and plate"
        return False
    if f == "s":  # parallel tense: "closes the door and walks out"
        return st.last_verb_form == "s" or not st.coord_finite
    if f == "base":
        return st.last_verb_form == "base" or w.verb_pref
    return w.verb_pref


def tag(words: list[str]) -> list[tuple[str, str | None]]:
    """Tag lower-cased tokens: one ``(upos, lemma)`` per token; lemma is set for VERB and AUX only."""
    lexes = [lex(w) for w in words]
    out: list[tuple[str, str | None]] = []
    st = _State()
    for i, (word, w) in enumerate(zip(words, lexes)):
        cls = w.cls
        if cls == "PUNCT_T":
            out.append(("PUNCT", None))
            continue
        if cls == "PUNCT_B":
            out.append(("PUNCT", None))
            if word in (",", "&"):
                st.coord_left, st.coord_finite = st.ctx, st.finite
                st.ctx, st.finite = "CCONJ", False
            else:  # sentence boundary
                st = _State()
            continue
        if cls in ("ADV", "NEG"):  # adverbs do not change the context: "person then quickly closes"
            out.append(("PART" if cls == "NEG" else "ADV", None))
            continue
        if cls == "REL" and word == "that" and st.ctx in ("START", "VERB", "ADP", "TO"):
            cls = "DET"  # a determiner, not a relative pronoun, where no noun precedes: "opens that bag"
        if cls == "OPEN" and w.verb is not None and _compound_head(words, lexes, i):
            out.append(("NOUN", None))  # "the living room", "a frying pan"
            st.ctx, st.plural_subject = "NOUN", False
            continue
        if cls == "OPEN" and w.verb is not None:
            is_verb = _ambiguous_is_verb(w, st, _next_significant(lexes, i)) if w.other else True
            if is_verb and not w.other and st.ctx in ("DET", "POSS") and w.form in ("ing", "past"):
                is_verb = False  # adjectival participle: "the closed door", "a folded towel"
            if is_verb:
                out.append(("VERB", w.verb))
                st.in_pp = False
                if w.form in ("s", "past") or (w.form == "base" and st.ctx in ("SUBJ", "REL", "START")):
                    st.finite = True
                st.last_verb_form = w.form
                st.ctx, st.to_left_verb = "VERB", w.verb
                continue
            out.append(("NOUN", None))
            st.ctx, st.plural_subject = "NOUN", w.plural
            continue
        if cls == "OPEN":
            out.append(("NOUN", None))
            st.ctx, st.plural_subject = "NOUN", w.plural
        elif cls == "PERSON":
            pronoun = word in lx.SUBJECT_PRONOUNS
            out.append(("PRON" if pronoun else "NOUN", None))
            st.ctx = "PP_PERSON" if st.in_pp and not pronoun else "SUBJ"
        elif cls == "APOS_S":
            nxt = _next_significant(lexes, i)
            if nxt is not None and nxt.cls == "OPEN" and nxt.verb is not None and nxt.form in ("ing", "past"):
                out.append(("AUX", "be"))  # "person's walking"
                st.ctx, st.finite = "AUX_BE", True
            else:
                out.append(("PART", None))  # possessive: "the person's shoes"
                st.ctx = "POSS"
        elif cls == "BE":
            out.append(("AUX", "be"))
            st.ctx, st.finite = "AUX_BE", True
        elif cls == "MODAL":
            out.append(("AUX", None))
            st.ctx, st.finite = "AUX", True
        elif cls in ("HAVE", "DO"):
            st.ctx = _have_do(word, cls, lexes, i, st, out)
        elif cls == "CCONJ":
            out.append(("CCONJ", None))
            if st.ctx != "CCONJ":  # "and then": keep what came before "and"
                st.coord_left, st.coord_finite = st.ctx, st.finite
            # A coordinator may start a new clause ("... and her dog runs after it").
            st.ctx, st.finite, st.in_pp = "CCONJ", False, False
        elif cls == "TO":
            out.append(("PART", None))
            st.to_left_verb = st.to_left_verb if st.ctx == "VERB" else None
            st.ctx = "TO"
        else:
            out.append((_UPOS.get(cls, "X"), None))
            st.ctx = cls
            if cls == "ADP":
                st.in_pp = word != "of"  # "a group of people dance": the subject's head, not a place
            elif cls not in ("DET", "POSS", "NUM"):
                st.in_pp = False
            if cls == "SCONJ":  # "while others watch": a new clause
                st.finite = False
    return out


def _compound_head(words: list[str], lexes: list[Lex], i: int) -> bool:
    """Whether ``words[i]`` is the "-ing" part of a compound noun with the next word ("living room")."""
    heads = lx.ING_COMPOUNDS.get(words[i])
    if not heads:
        return False
    for j in range(i + 1, len(words)):
        if lexes[j].cls != "PUNCT_T":
            return words[j] in heads
    return False


_UPOS = {
    "DET": "DET",
    "POSS": "DET",
    "SUBJ": "PRON",
    "OBJ": "PRON",
    "REL": "PRON",
    "ADP": "ADP",
    "NUM": "NUM",
}
_UPOS["SCONJ"] = "SCONJ"


def _have_do(word: str, cls: str, lexes: list[Lex], i: int, st: _State, out: list) -> str:
    """ "has opened" / "did not close" are auxiliaries; "has a cup" / "does the dishes" are main verbs."""
    nxt = None
    for j in range(i + 1, len(lexes)):
        if lexes[j].cls == "NEG":
            out.append(("AUX", _AUX_LEMMAS[cls]))
            st.finite = True
            return "AUX"
        if lexes[j].cls not in ("PUNCT_T", "ADV"):
            nxt = lexes[j]
            break
    if nxt is not None:
        if cls == "HAVE" and (nxt.cls == "BE" or (nxt.verb is not None and nxt.form == "past")):
            out.append(("AUX", "have"))
            st.finite = True
            return "AUX_HAVE"
        if cls == "DO" and (
            nxt.cls == "SUBJ" or (nxt.verb is not None and nxt.form == "base" and not nxt.noun_pref)
        ):
            out.append(("AUX", "do"))
            st.finite = True
            return "AUX"
    lemma = _AUX_LEMMAS[cls]
    out.append(("VERB", lemma))
    st.finite, st.last_verb_form, st.to_left_verb = True, _form(word, lemma), lemma
    return "VERB"
