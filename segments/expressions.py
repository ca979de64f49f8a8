"""SQL expressions the compiler needs that mean the same on PostgreSQL and SQLite.

Traits and event properties are JSON. A value may arrive as a number or as text
("29.50"); comparisons must give the same answer either way and on both databases,
so numbers are read through `JsonNumber`, which is NULL for anything that is not a
number instead of failing the query.
"""

from typing import Any

from django.db.models import BooleanField, Expression, F, FloatField, Func, TextField

from segments.language import rule_number

# SQLite's own lower() changes only A to Z: Bespoke registers this function on every
# SQLite connection (segments.apps) to lower-case text as segments.language.caseless
# does.
SQLITE_CASELESS = "bespoke_caseless"

# A number as text: optional sign, digits, optional fraction, optional exponent of
# one or two digits, in at most NUMBER_MAX_CHARS characters. That keeps it within a
# double's range (1e-297 to 1e297 at most): "1e400" or "1e-400" is text, as it is no
# number a rule could compare, where casting it failed the whole query.
NUMBER_PATTERN = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,2})?\s*$"
NUMBER_MAX_CHARS = 200


def json_text(field: Any, path: str) -> "JsonText":
    """Return the text at a dotted path inside a JSON column (NULL when missing or null)."""
    source = F(field) if isinstance(field, str) else field
    return JsonText(source, path.split("."))


class _TextFromJson(Expression):
    """Text read from one JSON column, in each database's own SQL."""

    output_field = TextField()

    def __init__(self, source: Any) -> None:
        super().__init__()
        self.source = F(source) if isinstance(source, str) else source

    def get_source_expressions(self) -> list:
        return [self.source]

    def set_source_expressions(self, exprs: list) -> None:
        (self.source,) = exprs


class JsonText(_TextFromJson):
    """A JSON value as text, the same on both databases.

    PostgreSQL's ->> already gives text, with NULL for a JSON null. Django's SQLite
    form returns the word 'null' for a JSON null, so SQLite gets its own SQL here.
    """

    def __init__(self, source: Any, keys: list[str]) -> None:
        super().__init__(source)
        self.keys = keys

    def as_postgresql(self, compiler, connection):
        column, params = compiler.compile(self.source)
        if len(self.keys) == 1:
            return f"({column} ->> %s)", [*params, self.keys[0]]
        return f"({column} #>> %s)", [*params, self.keys]

    def as_sqlite(self, compiler, connection):
        column, params = compiler.compile(self.source)
        path = "$" + "".join(f'."{key}"' for key in self.keys)
        kind = f"JSON_TYPE({column}, %s)"
        sql = (
            f"(CASE WHEN {kind} IN ('true', 'false') THEN {kind} "
            f"WHEN {kind} = 'null' THEN NULL "
            f"ELSE CAST(JSON_EXTRACT({column}, %s) AS TEXT) END)"
        )
        return sql, [*params, path, *params, path, *params, path, *params, path]


class JsonNumber(Expression):
    """The numeric value of a text expression, or NULL when the text is not a number."""

    output_field = FloatField()

    def __init__(self, text: Expression) -> None:
        super().__init__()
        self.text = text

    def get_source_expressions(self) -> list:
        return [self.text]

    def set_source_expressions(self, exprs: list) -> None:
        (self.text,) = exprs

    def as_postgresql(self, compiler, connection):
        sql, params = compiler.compile(self.text)
        return (
            f"(CASE WHEN ({sql}) ~ %s AND length({sql}) <= {NUMBER_MAX_CHARS} "
            f"THEN CAST(TRIM({sql}) AS double precision) END)",
            [*params, NUMBER_PATTERN, *params, *params],
        )

    def as_sqlite(self, compiler, connection):
        sql, params = compiler.compile(self.text)
        # SQLite's CAST turns any text into a number (0 for words), so check first:
        # non-empty, and nothing but digits, sign, point and an exponent of at most
        # two digits, as PostgreSQL's pattern (1e400 would be infinity here).
        check = (
            f"TRIM({sql}) <> '' AND TRIM({sql}) NOT GLOB '*[^0-9.eE+-]*' "
            f"AND TRIM({sql}) GLOB '*[0-9]*' "
            f"AND TRIM({sql}) NOT GLOB '*[eE]*[0-9][0-9][0-9]*' "
            f"AND length({sql}) <= {NUMBER_MAX_CHARS}"
        )
        return (
            f"(CASE WHEN {check} THEN CAST(TRIM({sql}) AS REAL) END)",
            [*params] * 6,
        )


class ArrayItemMatches(Expression):
    """True when any object in a JSON array holds a property matching a condition.

    Used for `products.<property>` on e-commerce events: "bought anything in the
    category Outerwear" is true if one item of the order's `products` matches.
    """

    output_field = BooleanField()
    TEXT_OPS = {"eq", "neq", "in", "contains", "starts_with"}
    NUMBER_OPS = {"gt", "gte", "lt", "lte"}

    def __init__(self, field: str, array_key: str, item_key: str, op: str, value: Any):
        super().__init__()
        self.column = F(field)
        self.array_key = array_key
        self.item_key = item_key
        self.op = op
        self.value = value

    def get_source_expressions(self) -> list:
        return [self.column]

    def set_source_expressions(self, exprs: list) -> None:
        (self.column,) = exprs

    def _condition(self, item_text: str, lower: str) -> tuple[str, list]:
        # Both sides lower-cased by the database, as Caseless does.
        op, value = self.op, self.value
        item = f"{lower}({item_text})"
        if op == "eq":
            return f"{item} = {lower}(%s)", [str(value)]
        if op == "neq":
            return f"{item} <> {lower}(%s)", [str(value)]
        if op == "in":
            marks = ", ".join([f"{lower}(%s)"] * len(value))
            return f"{item} IN ({marks})", [str(v) for v in value]
        if op == "contains":
            pattern = f"%{_like_escape(str(value))}%"
            return f"{item} LIKE {lower}(%s) ESCAPE '\\'", [pattern]
        if op == "starts_with":
            pattern = f"{_like_escape(str(value))}%"
            return f"{item} LIKE {lower}(%s) ESCAPE '\\'", [pattern]
        raise ValueError(op)

    def as_postgresql(self, compiler, connection):
        column, params = compiler.compile(self.column)
        item = "(item ->> %s)"
        if self.op in self.NUMBER_OPS:
            cond = (
                f"(CASE WHEN {item} ~ %s AND length({item}) <= {NUMBER_MAX_CHARS} "
                f"THEN CAST(TRIM({item}) AS double precision) END) "
                f"{_SQL_OP[self.op]} %s"
            )
            cond_params = [
                self.item_key,
                NUMBER_PATTERN,
                self.item_key,
                self.item_key,
                rule_number(self.value),
            ]
        else:
            cond, cond_params = self._condition(item, "LOWER")
            cond_params = [self.item_key] * cond.count(item) + cond_params
        sql = (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN "
            f"jsonb_typeof({column} -> %s) = 'array' THEN {column} -> %s "
            f"ELSE '[]'::jsonb END) AS item WHERE {cond})"
        )
        return sql, [*params, self.array_key, *params, self.array_key, *cond_params]

    def as_sqlite(self, compiler, connection):
        column, params = compiler.compile(self.column)
        item = "json_extract(item.value, %s)"
        path = f'$."{self.item_key}"'
        if self.op in self.NUMBER_OPS:
            cond = (
                f"((json_type(item.value, %s) IN ('integer', 'real') AND {item} "
                f"{_SQL_OP[self.op]} %s) OR (json_type(item.value, %s) = 'text' AND "
                f"TRIM({item}) <> '' AND TRIM({item}) NOT GLOB '*[^0-9.eE+-]*' AND "
                f"TRIM({item}) NOT GLOB '*[eE]*[0-9][0-9][0-9]*' AND "
                f"length({item}) <= {NUMBER_MAX_CHARS} AND "
                f"CAST(TRIM({item}) AS REAL) {_SQL_OP[self.op]} %s))"
            )
            number = rule_number(self.value)
            cond_params = [path, path, number, path, path, path, path, path, path]
            cond_params.append(number)
        else:
            # As text, a JSON true or false is the word, as PostgreSQL's ->> gives
            # it (json_extract gives 1 or 0).
            text = (
                "(CASE json_type(item.value, %s) WHEN 'true' THEN 'true' "
                "WHEN 'false' THEN 'false' ELSE json_extract(item.value, %s) END)"
            )
            cond, cond_params = self._condition(text, SQLITE_CASELESS)
            cond_params = [path, path] * cond.count(text) + cond_params
        sql = (
            f"EXISTS (SELECT 1 FROM json_each(CASE WHEN json_type({column}, %s) = 'array' "
            f"THEN json_extract({column}, %s) ELSE '[]' END) AS item WHERE {cond})"
        )
        array_path = f'$."{self.array_key}"'
        return sql, [*params, array_path, *params, array_path, *cond_params]


_SQL_OP = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Caseless(Func):
    """An expression's text lower-cased letter by letter, the same on both databases.

    Rules compare text with both sides passed through this, never one side lowered
    in Python, so a value matches however either side is written.
    """

    function = "LOWER"
    output_field = TextField()

    def __init__(self, expression: Any) -> None:
        from django.db.models.functions import Cast

        super().__init__(Cast(expression, TextField()))

    def as_sqlite(self, compiler, connection, **extra):
        return super().as_sql(compiler, connection, function=SQLITE_CASELESS, **extra)


class ArrayItemEquals(Expression):
    """True when any object in a JSON array has `item_key` equal (as text) to `other`.

    Used by sequences: "viewed a product and did not buy it" compares the viewed
    product's id with each item of a later order's `products`.
    """

    output_field = BooleanField()

    def __init__(self, field: str, array_key: str, item_key: str, other: Any) -> None:
        super().__init__()
        self.column = F(field)
        self.other = other
        self.array_key = array_key
        self.item_key = item_key

    def get_source_expressions(self) -> list:
        return [self.column, self.other]

    def set_source_expressions(self, exprs: list) -> None:
        self.column, self.other = exprs

    def as_postgresql(self, compiler, connection):
        column, params = compiler.compile(self.column)
        other, other_params = compiler.compile(self.other)
        sql = (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN "
            f"jsonb_typeof({column} -> %s) = 'array' THEN {column} -> %s "
            f"ELSE '[]'::jsonb END) AS item WHERE (item ->> %s) = ({other}))"
        )
        return sql, [
            *params,
            self.array_key,
            *params,
            self.array_key,
            self.item_key,
            *other_params,
        ]

    def as_sqlite(self, compiler, connection):
        column, params = compiler.compile(self.column)
        other, other_params = compiler.compile(self.other)
        array_path = f'$."{self.array_key}"'
        sql = (
            f"EXISTS (SELECT 1 FROM json_each(CASE WHEN json_type({column}, %s) = 'array' "
            f"THEN json_extract({column}, %s) ELSE '[]' END) AS item "
            f"WHERE CAST(json_extract(item.value, %s) AS TEXT) = CAST(({other}) AS TEXT))"
        )
        return sql, [
            *params,
            array_path,
            *params,
            array_path,
            f'$."{self.item_key}"',
            *other_params,
        ]


class OrderKey(_TextFromJson):
    """An order event's `order_id` as the order metrics key it: NULL when it has none.

    "1057", 1057 and 1057.0 are one order; a falsy id (0, false, "", null, [], {})
    names none, so its event counts alone (profiles/processing_traits.py). Another
    id property may be read the same way (`checkout_id` for a checkout).
    """

    def __init__(self, source: Any, key: str = "order_id") -> None:
        super().__init__(source)
        self.key = key

    def as_postgresql(self, compiler, connection):
        column, params = compiler.compile(self.source)
        value = f"({column} -> '{self.key}')"
        falsy = "'null', 'false', '0', '\"\"', '[]', '{}'"
        sql = (
            f"(CASE WHEN {value} IS NULL OR {value} IN ({falsy}) THEN NULL "
            f"WHEN jsonb_typeof({value}) = 'number' "
            f"THEN trim_scale({value}::numeric)::text "
            f"ELSE {column} ->> '{self.key}' END)"
        )
        return sql, [*params] * sql.count(column)

    def as_sqlite(self, compiler, connection):
        column, params = compiler.compile(self.source)
        kind = f"JSON_TYPE({column}, '$.{self.key}')"
        value = f"JSON_EXTRACT({column}, '$.{self.key}')"
        sql = (
            f"(CASE WHEN {kind} IS NULL OR {kind} IN ('null', 'false') THEN NULL "
            f"WHEN {kind} IN ('integer', 'real') THEN (CASE WHEN {value} = 0 THEN NULL "
            f"WHEN {value} = CAST({value} AS INTEGER) "
            f"THEN CAST(CAST({value} AS INTEGER) AS TEXT) "
            f"ELSE CAST({value} AS TEXT) END) "
            f"WHEN {kind} = 'text' THEN NULLIF({value}, '') "
            f"WHEN {kind} = 'true' THEN 'true' "
            f"WHEN {value} IN ('[]', '{{}}') THEN NULL "
            f"ELSE {value} END)"
        )
        return sql, [*params] * sql.count(column)
