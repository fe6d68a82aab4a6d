"""Closed-class words and lexical preferences for the offline verb tagger.

lemminflect knows which words *can* be verbs, but most concrete nouns can (cup, light, phone, table), so a dictionary
alone is far too eager. The tagger decides from context; these lists give it the function words that make up that
context, plus two small preference lists for words whose verb and noun readings are both common in video queries.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Word -> coarse class. These words are never main verbs, whatever lemminflect says ("up", "while", "back" all have
# verb readings there).
DETERMINERS = _words(
    "the a an this these those some any another each every no both either neither all several many few "
    "much more most such what whatever whichever"
)
POSSESSIVES = _words("his her their my your its our whose")
SUBJECT_PRONOUNS = _words("he she they i we you someone somebody everyone everybody anyone anybody nobody")
OBJECT_PRONOUNS = _words(
    "him them it me us something anything everything nothing himself herself themselves itself myself "
    "yourself ourselves"
)
RELATIVES = _words("who that which")
# Words that are prepositions or verb particles. After a verb they are particles ("turns on"), before a noun phrase
# prepositions ("on the bed"); either way the next word is not a finite verb unless it ends in -ing.
ADPOSITIONS = _words(
    "in on at to from with into onto through across over under underneath behind beside besides near by of for "
    "about around toward towards off out up down against along inside outside past between during without "
    "within upon via away back like than amongst among beneath above below beyond throughout"
)
# "then" joins actions in queries ("opens the door then walks out"), so it is treated as a coordinator.
COORDINATORS = _words("and or but nor & plus then")
SUBORDINATORS = _words("while as when whenever before after because until till if so once since though")
ADVERBS = _words(
    "also just still again finally first later now too very really together there here not never already "
    "almost soon even only maybe perhaps next instead quite rather somewhat home forward backward backwards "
    "upstairs downstairs outdoors indoors afterwards afterward meanwhile repeatedly briefly ever always often "
    "sometimes immediately suddenly quickly slowly carefully n't nt"
)
NEGATIONS = _words("not n't nt never")
NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve twenty hundred thousand half "
    "dozen first second third"
)
BE_FORMS = _words("be is are was were am been being 's 're 'm")
MODALS = _words("can could will would shall should may might must 'll 'd ca wo")
HAVE_FORMS = _words("have has had having 've")
DO_FORMS = _words("do does did")

# Heads of the subject noun phrase in almost every query. A word right after one of them is the verb slot
# ("the person drinks"), whereas after another noun it is usually a compound ("a coffee cup").
PERSON_NOUNS = _words(
    "person persons people man men woman women boy boys girl girls guy guys lady ladies kid kids child children "
    "individual adult adults teen teenager baby player someone somebody he she they"
)

# Verbs that take a to-infinitive: "begins to dress", "goes to sleep", "tries to open".
CATENATIVES = _words(
    "begin start try want need decide continue attempt like love hate seem appear go come hurry forget "
    "remember learn plan prepare proceed manage pretend refuse wait stop return get have use turn move"
)

# Ambiguous words (both readings in lemminflect) whose verb reading dominates in action descriptions. Lemmas.
VERB_PREFERRING = _words(
    "walk run drink watch dress laugh smile sneeze cook play work look turn sleep rest wash clean close "
    "open fix move dance jump kick push pull throw catch climb swim ride drive shave brush comb paint draw "
    "read write sing cry wave point fall lift carry pour stir chop cut mop sweep vacuum dust iron fold pack "
    "tie text call type film record wipe tidy rinse dry spray kiss hug hit punch shake nod yawn cough "
    "stretch bend kneel lie lean crawl step hop roll spin flip toss grab reach touch rub scratch knock ring "
    "answer smell taste bite chew sip swallow feed serve bake fry boil mix whisk smoke drop place switch "
    "check search stare glance peek wait hide leave enter exit return visit nap wake eat sit stand hold take "
    "put get make do go come talk snuggle undress awaken grasp show hand cover empty fill help "
    "use try start stop finish set"
)
# Ambiguous words whose noun reading dominates (household objects and places in indoor video): after "to" or a
# coordinator they are read as nouns unless an object follows ("and cups the water").
NOUN_PREFERRING = (
    _words(
        "bed table chair window floor room book picture cup towel blanket pillow shoe paper glass mirror bag "
        "box closet couch garage sandwich phone light dish bottle plate bowl door key doorknob shelf cabinet "
        "desk sofa stove sink fridge refrigerator laptop computer television tv camera food drink coffee water "
        "tea juice milk broom vacuum clothes clothing shirt jacket coat hat dress sweater pants jeans sock hair "
        "face hand head arm leg foot eye mouth nose back wall stair stairs hallway kitchen bathroom bedroom house "
        "home car bike ball toy game video movie show music song picture photo frame bin trash basket basin "
        "tissue medicine pill candle lamp switch bulb cord wire cable remote button handle lid cover sheet bottle "
        "can jar pot pan kettle knife fork spoon napkin apron bench step steps corner watch ring note letter "
        "card envelope package parcel gift present homework work paint bench cloth rag sponge soap brush comb "
        "fan heater iron blind blinds curtain curtains rug carpet mat outlet plug"
    )
    - VERB_PREFERRING
)

# "-ing" words that make a compound noun with the next word ("the living room", "a frying pan"): the pair is a noun
# even where a bare "-ing" word would be a verb ("walks into living room"). Keys: the -ing word, values: the heads.
ING_COMPOUNDS: dict[str, frozenset[str]] = {
    "living": _words("room rooms area"),
    "dining": _words("room rooms table tables area chair chairs"),
    "frying": _words("pan pans"),
    "washing": _words("machine machines"),
    "sleeping": _words("bag bags"),
    "cutting": _words("board boards"),
    "ironing": _words("board boards"),
    "changing": _words("table room"),
    "rocking": _words("chair chairs"),
    "swimming": _words("pool pools"),
    "dressing": _words("room table gown"),
    "waiting": _words("room area"),
    "drinking": _words("glass glasses fountain"),
    "baking": _words("sheet pan dish soda"),
    "mixing": _words("bowl bowls"),
    "walking": _words("stick cane"),
    "running": _words("water shoes"),
    "coloring": _words("book books"),
    "reading": _words("glasses lamp"),
    "shopping": _words("bag bags cart list"),
    "sewing": _words("machine kit"),
}
# Verbs of aspect and attempt: "begins sneezing", "starts to laugh", "tries to open the door". They frame the action
# instead of naming it, so by default the inversion tasks neither mask them (VC) nor ask for them (AR, VD) when
# another verb follows them (rewards.nlp.action_verb_spans; TaskArguments.aspectual_verbs changes the list).
ASPECTUAL_VERBS = _words("begin start proceed try continue keep attempt resume commence")
