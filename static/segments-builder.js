// The segment builder: a structured editor over the JSON rule in the form's textarea,
// with a live preview (debounced POST to the preview API) and a "why" box.
// Paths follow segments/language.py: "rule", "rule.all[0]", "rule.all[1].not", ...
(function () {
  "use strict";

  const root = document.querySelector("[data-builder]");
  if (!root) return;

  const PREVIEW_DELAY_MS = 400;
  const vocab = JSON.parse(document.getElementById("builder-vocabulary").textContent);
  const savedErrors = JSON.parse(document.getElementById("builder-rule-errors").textContent);
  const form = root.querySelector("#segment-form");
  const textarea = form.querySelector("textarea[name=rule]");
  const treeBox = root.querySelector("[data-rule-tree]");
  const jsonBox = root.querySelector("[data-rule-json]");
  const jsonToggle = root.querySelector("[data-json-toggle]");
  const jsonProblem = root.querySelector("[data-json-problem]");
  const errorList = root.querySelector("[data-error-list]");
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const segmentId = root.dataset.segmentId ? Number(root.dataset.segmentId) : null;

  const OP_LABELS = {
    eq: "is", neq: "is not", in: "is one of", not_in: "is none of",
    contains: "contains", starts_with: "starts with", gt: ">", gte: "≥", lt: "<",
    lte: "≤", between: "is between", exists: "is set", is_empty: "is empty",
    within_last_days: "in the last … days", more_than_days_ago: "more than … days ago",
    anniversary_in_days: "has its anniversary in exactly … days (0: today)",
  };
  const COUNT_LABELS = {
    "": "at least once", gte: "at least", gt: "more than", lte: "at most",
    lt: "fewer than", eq: "exactly",
  };
  // In the order segments/preview.py counts them (INELIGIBLE_REASONS).
  const REASON_LABELS = {
    no_email: "no email address", unsubscribed: "unsubscribed",
    cleaned: "cleaned (address bounced)", not_subscribed: "never subscribed",
    suppressed: "suppressed", needs_smtputf8: "address needs an ESP with SMTPUTF8",
  };
  const KIND_LABELS = {
    attribute: "Profile field", trait: "Custom trait", metric: "Metric",
    event: "Event", engagement: "Email engagement", consent: "Consent",
    suppressed: "Suppression", segment: "Other segment", trend: "Event trend",
  };
  const VALUELESS = ["exists", "is_empty"];
  const LIST_OPS = ["in", "not_in"];
  const NUMBER_OPS = ["gt", "gte", "lt", "lte"];
  const DAY_OPS = ["within_last_days", "more_than_days_ago", "anniversary_in_days"];

  let rule = null;
  let showingJson = false;
  let timer = null;
  let requestNumber = 0;
  // The current rule's problems: from a refused save at first, then from each preview.
  let errors = savedErrors;

  // Small DOM helpers ------------------------------------------------------------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([key, value]) => {
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== null && value !== undefined && value !== false) {
        node.setAttribute(key, value === true ? "" : value);
      }
    });
    (children || []).forEach((child) => child && node.append(child));
    return node;
  }

  function select(options, value, onchange, label) {
    const box = el("select", { "aria-label": label, onchange: (e) => onchange(e.target.value) });
    options.forEach(([optionValue, text]) => {
      box.append(el("option", { value: optionValue, text: text }));
    });
    box.value = value;
    return box;
  }

  function input(value, oninput, attrs) {
    return el("input", Object.assign({ value: value ?? "", oninput: (e) => oninput(e.target.value) }, attrs));
  }

  function button(text, onclick, className) {
    return el("button", { type: "button", class: className || "small", text: text, onclick: onclick });
  }

  // What a node is, and which ops and values it takes ------------------------------

  function kindOf(node) {
    if (typeof node !== "object" || node === null || Array.isArray(node)) return null;
    if ("all" in node) return "all";
    if ("any" in node) return "any";
    if ("not" in node) return "not";
    if ("attribute" in node) {
      return String(node.attribute).startsWith("traits.") ? "trait" : "attribute";
    }
    for (const kind of ["metric", "event", "engagement", "trend", "consent", "suppressed", "segment"]) {
      if (kind in node) return kind;
    }
    return null;
  }

  // A trait declared in the trait schema, or undefined.
  function declaredTrait(node) {
    const name = String(node.attribute || "");
    if (!name.startsWith("traits.")) return undefined;
    return (vocab.traits || []).find((t) => t.name === name.slice("traits.".length));
  }

  function valueType(node) {
    if ("metric" in node) return vocab.metrics[node.metric] || "number";
    const name = String(node.attribute || "");
    if (vocab.date_fields.includes(name)) return "date";
    if (name === "continent") return "continent";
    if (name === "tags") return "tags";
    if (name.startsWith("traits.")) return "trait";
    return "text";
  }

  function opsFor(node) {
    const declared = declaredTrait(node);
    if (declared) return declared.ops;
    const type = valueType(node);
    if (type === "continent") return ["eq", "neq", "in", "not_in"];
    if (type === "tags") return ["contains", "exists", "is_empty"];
    return vocab.ops[type] || vocab.ops.text;
  }

  // Conditions added on this page whose value is still to be chosen: the preview
  // waits for them, rather than count everyone whose field is empty.
  const unfinished = new WeakSet();

  function newCondition(kind) {
    const node = conditionOf(kind);
    if (node.value === "") unfinished.add(node);
    return node;
  }

  function waitsForValue(node) {
    if (Array.isArray(node)) return node.some(waitsForValue);
    if (!node || typeof node !== "object") return false;
    if (unfinished.has(node) && !VALUELESS.includes(node.op)) {
      const value = node.value;
      if ((typeof value === "string" && !value.trim()) || (Array.isArray(value) && !value.length)) return true;
    }
    return Object.values(node).some(waitsForValue);
  }

  function conditionOf(kind) {
    switch (kind) {
      case "trait": return { attribute: "traits.", op: "eq", value: "" };
      case "metric": return { metric: "lifetime_value", op: "gt", value: 0 };
      case "event": return { event: vocab.events[0] || "Order Completed", did: true };
      case "engagement": return { engagement: "opened", within_days: 30 };
      case "trend": return { trend: "Email Opened", over_days: 60, direction: "declining" };
      case "consent": return { consent: "subscribed" };
      case "suppressed": return { suppressed: false };
      case "segment": return { segment: vocab.segments.length ? vocab.segments[0].slug : "" };
      default: return { attribute: "country_code", op: "eq", value: "" };
    }
  }

  // Moving a value to another op keeps what still makes sense.
  function fitValue(node, op, numeric) {
    const old = node.value;
    const first = Array.isArray(old) ? old[0] : old;
    if (VALUELESS.includes(op)) delete node.value;
    else if (LIST_OPS.includes(op)) node.value = Array.isArray(old) ? old : (first === undefined || first === "" ? [] : [first]);
    else if (op === "between") node.value = Array.isArray(old) && old.length === 2 ? old : [0, 0];
    else if (NUMBER_OPS.includes(op) || numeric) node.value = Number(first) || 0;
    else if (DAY_OPS.includes(op)) node.value = Number.isInteger(first) ? first : 30;
    else node.value = first === undefined || first === null ? "" : first;
  }

  // Typed text becomes the JSON value the compiler expects.
  function typed(text, numeric, previous) {
    const trimmed = text.trim();
    if (numeric) return trimmed === "" ? "" : Number(trimmed);
    if (trimmed === "true" || trimmed === "false") return trimmed === "true";
    if (typeof previous === "number" && trimmed !== "" && !isNaN(Number(trimmed))) {
      return Number(trimmed);
    }
    return text;
  }

  // Rendering -------------------------------------------------------------------

  function render() {
    treeBox.replaceChildren(renderNode(rule, "rule", {
      replace: (node) => { rule = node; changed(true); },
      remove: null,
    }));
    showErrors(errors);
  }

  function badge(path) {
    return el("span", { class: "node-count", "data-count-for": path, title: "profiles this alone matches" });
  }

  function nodeBox(className, path, header, body) {
    return el("div", { class: className, "data-path": path }, [
      el("div", { class: "node-head" }, header),
      el("p", { class: "node-error bad", "data-error-for": path, hidden: true }),
      body,
    ]);
  }

  function renderNode(node, path, slot) {
    const kind = kindOf(node);
    if (kind === "all" || kind === "any") return renderGroup(node, kind, path, slot);
    if (kind === "not") return renderNot(node, path, slot);
    if (kind === null) {
      return nodeBox("condition unknown", path, [
        el("span", { text: "A condition the editor cannot show: edit it as JSON." }),
        badge(path),
        slot.remove && button("Remove", slot.remove, "small danger"),
      ]);
    }
    return renderCondition(node, kind, path, slot);
  }

  function negate(node, slot) {
    return button("NOT", () => slot.replace({ not: node }), "small secondary");
  }

  function renderGroup(node, key, path, slot) {
    const children = Array.isArray(node[key]) ? node[key] : [];
    const list = el("div", { class: "children" });
    children.forEach((child, index) => {
      list.append(renderNode(child, `${path}.${key}[${index}]`, {
        replace: (replacement) => { children[index] = replacement; changed(true); },
        remove: () => { children.splice(index, 1); changed(true); },
      }));
    });
    if (!children.length) {
      list.append(el("p", { class: "muted", text: key === "all" ? "No conditions: everyone matches." : "No conditions: no one matches." }));
    }

    const header = [
      select([["all", "All of these (AND)"], ["any", "Any of these (OR)"]], key, (value) => {
        if (value === key) return;
        node[value] = children;
        delete node[key];
        changed(true);
      }, "Group"),
      badge(path),
      button("Add condition", () => { children.push(newCondition("attribute")); changed(true); }),
      button("Add group", () => { children.push({ any: [] }); changed(true); }),
      slot.remove && negate(node, slot),
      slot.remove && button("Remove", slot.remove, "small danger"),
    ];
    return nodeBox(`group group-${key}`, path, header, list);
  }

  function renderNot(node, path, slot) {
    const header = [
      el("strong", { text: "NOT" }),
      badge(path),
      button("Remove NOT", () => slot.replace(node.not), "small secondary"),
      slot.remove && button("Remove", slot.remove, "small danger"),
    ];
    const inner = renderNode(node.not, `${path}.not`, {
      replace: (replacement) => { node.not = replacement; changed(true); },
      remove: slot.remove || (() => slot.replace({ all: [] })),
    });
    return nodeBox("group group-not", path, header, el("div", { class: "children" }, [inner]));
  }

  function renderCondition(node, kind, path, slot) {
    const kindSelect = select(Object.entries(KIND_LABELS), kind, (value) => {
      slot.replace(newCondition(value));
    }, "Condition kind");
    const fields = el("span", { class: "fields" }, conditionFields(node, kind));
    const header = [
      kindSelect, fields, badge(path),
      slot.remove && negate(node, slot),
      slot.remove && button("Remove", slot.remove, "small danger"),
    ];
    return nodeBox("condition", path, header, null);
  }

  function conditionFields(node, kind) {
    switch (kind) {
      case "attribute": return attributeFields(node);
      case "trait": return traitFields(node);
      case "metric": return metricFields(node);
      case "event": return eventFields(node);
      case "engagement": return engagementFields(node);
      case "trend": return trendFields(node);
      case "consent":
        return [select(vocab.consent.map((c) => [c.value, c.label]), node.consent, (value) => {
          node.consent = value; changed(false);
        }, "Consent")];
      case "suppressed":
        return [select([["true", "is suppressed"], ["false", "is not suppressed"]], String(node.suppressed), (value) => {
          node.suppressed = value === "true"; changed(false);
        }, "Suppressed")];
      default: return segmentFields(node);
    }
  }

  function attributeFields(node) {
    const names = [...vocab.text_fields, ...vocab.date_fields, "continent", "tags"];
    const labels = vocab.field_labels || {};
    const fieldSelect = select(names.map((n) => [n, labels[n] || n]), node.attribute, (value) => {
      node.attribute = value;
      const ops = opsFor(node);
      if (!ops.includes(node.op)) node.op = ops[0];
      fitValue(node, node.op, false);
      if (value === "continent" && !vocab.continents.includes(node.value)) node.value = vocab.continents[0];
      changed(true);
    }, "Field");
    return [fieldSelect, ...opAndValue(node, false)];
  }

  // Declared traits are offered by name; once one is chosen its ops and values fit
  // its type. Any other name is still accepted, compared as written.
  function traitFields(node) {
    const listId = "builder-traits";
    if (!document.getElementById(listId)) {
      document.body.append(el("datalist", { id: listId }, (vocab.traits || []).map((t) => (
        el("option", { value: t.name, label: t.words })
      ))));
    }
    let before = declaredTrait(node);
    const name = input(node.attribute.slice("traits.".length), (value) => {
      node.attribute = `traits.${value.trim()}`; changed(false);
    }, { placeholder: "trait name", "aria-label": "Trait name", size: 12, list: listId });
    name.addEventListener("change", () => {
      const after = declaredTrait(node);
      if (after === before) return;
      before = after;
      const ops = opsFor(node);
      if (!ops.includes(node.op)) node.op = ops[0];
      fitTrait(node, after);
      changed(true);
    });
    const declared = declaredTrait(node);
    const hint = declared ? [el("span", { class: "muted", "data-trait-type": declared.type, text: traitHint(declared) })] : [];
    return [name, ...hint, ...opAndValue(node, declared ? declared.type === "number" : false)];
  }

  function traitHint(declared) {
    let hint = declared.words;
    if (declared.allowed_values.length) hint += `: ${declared.allowed_values.join(", ")}`;
    if (declared.minimum !== null || declared.maximum !== null) {
      hint += ` from ${declared.minimum ?? "any"} to ${declared.maximum ?? "any"}`;
    }
    return `(${hint})`;
  }

  // A value that cannot fit a declared trait's type is replaced by one that does.
  function fitTrait(node, declared) {
    fitValue(node, node.op, declared ? declared.type === "number" : false);
    if (!declared || VALUELESS.includes(node.op) || DAY_OPS.includes(node.op)) return;
    if (declared.type === "boolean") node.value = node.value === false ? false : true;
    else if (declared.allowed_values.length && !LIST_OPS.includes(node.op)) {
      if (!declared.allowed_values.includes(node.value)) node.value = declared.allowed_values[0];
    }
  }

  function metricFields(node) {
    const metricSelect = select(Object.keys(vocab.metrics).map((m) => [m, m]), node.metric, (value) => {
      node.metric = value;
      const ops = opsFor(node);
      if (!ops.includes(node.op)) node.op = ops[0];
      fitValue(node, node.op, vocab.metrics[value] === "number");
      changed(true);
    }, "Metric");
    return [metricSelect, ...opAndValue(node, vocab.metrics[node.metric] === "number")];
  }

  function opAndValue(node, numeric) {
    const opSelect = select(opsFor(node).map((op) => [op, OP_LABELS[op] || op]), node.op, (value) => {
      node.op = value; fitValue(node, value, numeric);
      const declared = declaredTrait(node);
      if (declared) fitTrait(node, declared);
      changed(true);
    }, "Operator");
    return [opSelect, ...valueFields(node, numeric)];
  }

  function valueFields(node, numeric) {
    const op = node.op;
    const set = (value) => { node.value = value; changed(false); };
    if (VALUELESS.includes(op)) return [];
    const declared = declaredTrait(node);
    if (declared && declared.type === "boolean") {
      return [select([["true", "true"], ["false", "false"]], String(node.value === true), (value) => set(value === "true"), "Value")];
    }
    if (declared && declared.allowed_values.length && (op === "eq" || op === "neq")) {
      return [select(declared.allowed_values.map((v) => [v, v]), node.value, set, "Value")];
    }
    if (node.attribute === "continent" && (op === "eq" || op === "neq")) {
      const labels = vocab.continent_labels || {};
      return [select(vocab.continents.map((c) => [c, labels[c] || c]), node.value, set, "Continent")];
    }
    if (LIST_OPS.includes(op)) {
      const values = Array.isArray(node.value) ? node.value : [];
      const placeholder = declared && declared.allowed_values.length ? declared.allowed_values.join(", ") : "a, b, c";
      return [input(values.join(", "), (text) => {
        set(text.split(",").map((part) => part.trim()).filter(Boolean).map((part) => typed(part, numeric, values[0])));
      }, { placeholder: placeholder, "aria-label": "Values, comma separated", size: 18 })];
    }
    if (op === "between") {
      const pair = Array.isArray(node.value) ? node.value : [0, 0];
      // Each bound changes only its own end of the rule's pair as it is now: the
      // other input may have been edited since this one was drawn.
      const bound = (index) => (text) => {
        const current = Array.isArray(node.value) ? [...node.value] : [0, 0];
        current[index] = Number(text);
        set(current);
      };
      return [
        input(pair[0], bound(0), { type: "number", "aria-label": "From", class: "narrow" }),
        el("span", { text: "and" }),
        input(pair[1], bound(1), { type: "number", "aria-label": "To", class: "narrow" }),
      ];
    }
    if (DAY_OPS.includes(op)) {
      return [input(node.value, (text) => set(parseInt(text, 10)), { type: "number", min: 0, "aria-label": "Days", class: "narrow" }), el("span", { text: "days" })];
    }
    const asNumber = numeric || NUMBER_OPS.includes(op);
    return [input(node.value, (text) => set(typed(text, asNumber, node.value)), {
      type: asNumber ? "number" : "text", "aria-label": "Value", size: 14,
    })];
  }

  function daysInput(node, label) {
    return input(node.within_days, (text) => {
      const days = parseInt(text, 10);
      if (Number.isNaN(days)) delete node.within_days; else node.within_days = days;
      changed(false);
    }, { type: "number", min: 1, placeholder: "any time", "aria-label": label, class: "narrow" });
  }

  function eventNameInput(value, onchange) {
    const listId = "builder-events";
    if (!document.getElementById(listId)) {
      document.body.append(el("datalist", { id: listId }, vocab.events.map((name) => el("option", { value: name }))));
    }
    return input(value, onchange, { list: listId, "aria-label": "Event name", size: 16 });
  }

  function trendFields(node) {
    return [
      eventNameInput(node.trend, (value) => { node.trend = value; changed(false); }),
      el("span", { text: "over" }),
      input(node.over_days, (text) => { node.over_days = parseInt(text, 10); changed(false); }, {
        type: "number", min: 2, "aria-label": "Over days", class: "narrow",
      }),
      el("span", { text: "days is" }),
      select([["declining", "declining"], ["rising", "rising"]], node.direction, (value) => {
        node.direction = value; changed(false);
      }, "Direction"),
    ];
  }

  function eventFields(node) {
    const did = select([["true", "did"], ["false", "did not do"]], String(node.did !== false), (value) => {
      node.did = value === "true"; changed(false);
    }, "Did or did not");
    const name = eventNameInput(node.event, (value) => { node.event = value; changed(false); });
    const count = node.count || {};
    const countOp = select(Object.entries(COUNT_LABELS), count.op || "", (value) => {
      if (value === "") delete node.count;
      else node.count = { op: value, value: Number.isInteger(count.value) ? count.value : 1 };
      changed(true);
    }, "How many times");
    const parts = [did, name, countOp];
    if (node.count) {
      parts.push(input(count.value, (text) => { node.count.value = parseInt(text, 10); changed(false); }, {
        type: "number", min: 0, "aria-label": "Times", class: "narrow",
      }), el("span", { text: "times" }));
    }
    parts.push(el("span", { text: "within" }), daysInput(node, "Within days"), el("span", { text: "days" }));
    parts.push(whereRows(node));
    if (node.followed_by) {
      parts.push(el("span", { class: "muted", text: `followed by ${node.followed_by.event} (edit as JSON)` }));
    }
    return parts;
  }

  function whereRows(node) {
    const where = Array.isArray(node.where) ? node.where : [];
    const box = el("div", { class: "where" });
    where.forEach((condition, index) => {
      const property = input(condition.property, (value) => { condition.property = value; changed(false); }, {
        placeholder: "property", "aria-label": "Property", size: 12,
      });
      const opSelect = select(vocab.ops.property.map((op) => [op, OP_LABELS[op] || op]), condition.op, (value) => {
        condition.op = value; fitValue(condition, value, false); changed(true);
      }, "Property operator");
      box.append(el("div", { class: "where-row" }, [
        el("span", { text: "where" }), property, opSelect, ...valueFields(condition, false),
        button("Remove", () => {
          where.splice(index, 1);
          if (!where.length) delete node.where;
          changed(true);
        }, "small danger"),
      ]));
    });
    box.append(button("Add where", () => {
      node.where = where;
      where.push({ property: "", op: "eq", value: "" });
      changed(true);
    }, "small secondary"));
    return box;
  }

  function engagementFields(node) {
    return [
      select([["true", "did"], ["false", "never"]], String(node.did !== false), (value) => {
        if (value === "true") delete node.did; else node.did = false;
        changed(false);
      }, "Did or never"),
      select([["opened", "open"], ["clicked", "click"]], node.engagement, (value) => {
        node.engagement = value; changed(false);
      }, "Opened or clicked"),
      input(node.campaign, (value) => {
        if (value.trim()) node.campaign = value.trim(); else delete node.campaign;
        changed(false);
      }, { placeholder: "any campaign", "aria-label": "Campaign slug", size: 12 }),
      el("span", { text: "within" }), daysInput(node, "Within days"), el("span", { text: "days" }),
    ];
  }

  function segmentFields(node) {
    const options = vocab.segments.map((s) => [s.slug, s.name]);
    if (!options.some(([slug]) => slug === node.segment)) options.unshift([node.segment, node.segment]);
    return [el("span", { text: "is in" }), select(options, node.segment, (value) => {
      node.segment = value; changed(false);
    }, "Segment")];
  }

  // Keeping the textarea, the tree and the preview in step ------------------------------

  function changed(structural) {
    textarea.value = JSON.stringify(rule, null, 2);
    if (structural) render();
    schedulePreview();
  }

  function schedulePreview() {
    clearTimeout(timer);
    timer = setTimeout(preview, PREVIEW_DELAY_MS);
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify(body),
    });
    return { status: response.status, data: await response.json() };
  }

  async function preview() {
    const number = ++requestNumber;
    if (waitsForValue(rule)) {
      clearPreview("No count until each new condition has its value.");
      setState("Choose a value for the new condition to see who matches.");
      return;
    }
    setState("Counting…");
    let result;
    try {
      result = await post(root.dataset.previewUrl, { rule: rule, segment_id: segmentId });
    } catch (error) {
      if (number === requestNumber) {
        clearPreview();
        setState("The preview could not be fetched; it will retry on the next change.");
      }
      return;
    }
    if (number !== requestNumber) return; // a newer edit is already being counted
    errors = result.status === 200 ? [] : result.data.errors || [];
    showErrors(errors);
    if (result.status !== 200) {
      clearPreview();
      setState(problemsState());
      return;
    }
    showPreview(result.data);
  }

  function problemsState() {
    return showingJson
      ? "The rule has problems: see the list above the JSON."
      : "The rule has problems: see the marked conditions.";
  }

  // Nothing of the last valid rule's preview may pass for the current rule's.
  function clearPreview(none = "No preview until the rule has no problems.") {
    ["[data-live-count]", "[data-eligible]", "[data-ineligible]", "[data-description]"].forEach((selector) => {
      text(selector, "—");
    });
    text("[data-eligibility-end]", ".");
    root.querySelector("[data-reasons]").replaceChildren();
    treeBox.querySelectorAll("[data-count-for]").forEach((badgeEl) => { badgeEl.textContent = ""; });
    root.querySelector("[data-sample]").replaceChildren(
      el("tr", {}, [el("td", { colspan: 2, class: "muted", text: none })]),
    );
    const diffBox = root.querySelector("[data-diff]");
    if (diffBox) diffBox.replaceChildren(el("p", { class: "muted", text: none }));
  }

  function text(selector, value) {
    root.querySelector(selector).textContent = value;
  }

  function setState(message) {
    text("[data-preview-state]", message);
  }

  function showPreview(data) {
    text("[data-live-count]", data.matched.toLocaleString());
    text("[data-eligible]", data.eligible.toLocaleString());
    text("[data-ineligible]", data.ineligible.total.toLocaleString());
    setState("");
    const reasons = Object.entries(REASON_LABELS).filter(([key]) => data.ineligible[key]);
    text("[data-eligibility-end]", reasons.length ? ":" : ".");
    root.querySelector("[data-reasons]").replaceChildren(...reasons.map(([key, label]) => (
      el("li", { "data-reason": key, text: `${label}: ${data.ineligible[key].toLocaleString()}` })
    )));
    text("[data-description]", data.description);
    data.conditions.forEach((condition) => {
      const badgeEl = treeBox.querySelector(`[data-count-for="${condition.path}"]`);
      if (badgeEl) badgeEl.textContent = condition.count.toLocaleString();
    });
    root.querySelector("[data-sample]").replaceChildren(...sampleRows(data.sample));
    if (data.diff) showDiff(data.diff);
  }

  function profileLink(row) {
    const url = root.dataset.profileUrl.replace(/0\/$/, `${row.id}/`);
    return el("a", { href: url, text: row.email || row.name || `Profile ${row.id}` });
  }

  function sampleRows(rows) {
    if (!rows.length) return [el("tr", {}, [el("td", { colspan: 2, class: "muted", text: "No one matches." })])];
    return rows.map((row) => el("tr", {}, [
      el("td", {}, [profileLink(row), row.name && row.email ? el("span", { class: "muted", text: ` ${row.name}` }) : null]),
      el("td", { text: row.country }),
    ]));
  }

  function showDiff(diff) {
    const box = root.querySelector("[data-diff]");
    if (diff.saved_rule_error) {
      box.replaceChildren(el("p", { class: "bad", text: `The saved rule no longer works: ${diff.saved_rule_error}` }));
      return;
    }
    if (diff.unchanged) {
      box.replaceChildren(el("p", { class: "muted", text: "No change from the saved rule." }));
      return;
    }
    const list = (rows) => el("ul", { class: "people" }, rows.map((row) => el("li", {}, [profileLink(row)])));
    const parts = [el("p", {}, [
      el("strong", { "data-entering": "", text: `+${diff.entering.toLocaleString()}` }), " would enter, ",
      el("strong", { "data-leaving": "", text: `−${diff.leaving.toLocaleString()}` }), " would leave.",
    ])];
    if (diff.entering_sample.length) {
      parts.push(el("p", { class: "muted", text: "Entering, for example:" }), list(diff.entering_sample));
    }
    if (diff.leaving_sample.length) {
      parts.push(el("p", { class: "muted", text: "Leaving, for example:" }), list(diff.leaving_sample));
    }
    box.replaceChildren(...parts);
  }

  // Errors, from the API or from a refused save, shown at the node they are about.

  function nodeFor(path) {
    let best = null;
    treeBox.querySelectorAll("[data-path]").forEach((node) => {
      const candidate = node.dataset.path;
      const fits = path === candidate || [".", "[", "<"].includes(path.charAt(candidate.length));
      if (path.startsWith(candidate) && fits && (!best || candidate.length > best.dataset.path.length)) best = node;
    });
    return best;
  }

  function clearErrors() {
    treeBox.querySelectorAll(".has-error").forEach((node) => node.classList.remove("has-error"));
    treeBox.querySelectorAll("[data-error-for]").forEach((node) => { node.hidden = true; node.textContent = ""; });
    // In JSON mode this line says why the text does not parse; that is not ours to clear.
    if (!showingJson) { jsonProblem.hidden = true; jsonProblem.textContent = ""; }
  }

  // In JSON mode the tree is hidden and may be older than the text, so the errors are
  // listed above the textarea; the tree is marked when it is shown again.
  function showErrors(found) {
    clearErrors();
    errorList.replaceChildren(...found.map((error) => el("li", { "data-error-path": error.path }, [
      el("code", { text: error.path }), `: ${error.message}`,
    ])));
    errorList.hidden = !found.length;
    if (showingJson) return;

    const unplaced = [];
    found.forEach((error) => {
      const node = nodeFor(error.path);
      if (!node) { unplaced.push(`${error.path}: ${error.message}`); return; }
      node.classList.add("has-error");
      const slot = node.querySelector(`[data-error-for="${node.dataset.path}"]`);
      slot.hidden = false;
      const where = error.path === node.dataset.path ? "" : `${error.path}: `;
      slot.textContent = (slot.textContent ? `${slot.textContent} ` : "") + where + error.message;
    });
    if (unplaced.length) { jsonProblem.hidden = false; jsonProblem.textContent = unplaced.join("; "); }
  }

  // The "why" box --------------------------------------------------------------

  async function explain(event) {
    event.preventDefault();
    const box = root.querySelector("[data-why-result]");
    const reference = event.target.elements.profile.value.trim();
    if (!reference) return;
    box.replaceChildren(el("p", { class: "muted", text: "Checking…" }));
    const result = await post(root.dataset.explainUrl, { rule: rule, profile: reference, segment_id: segmentId });
    treeBox.querySelectorAll("[data-held]").forEach((node) => node.removeAttribute("data-held"));
    if (result.status !== 200) {
      box.replaceChildren(...(result.data.errors || []).map((error) => el("p", { class: "bad", text: `${error.path}: ${error.message}` })));
      return;
    }
    const data = result.data;
    data.nodes.forEach((node) => {
      const element = treeBox.querySelector(`[data-path="${node.path}"]`);
      if (element) element.setAttribute("data-held", node.held ? "held" : "failed");
    });
    box.replaceChildren(
      el("p", {}, [
        el("strong", { class: data.in ? "ok" : "bad", "data-why-answer": data.in ? "in" : "out", text: data.in ? "In" : "Out" }),
        ` — ${data.profile.email || data.profile.name || `Profile ${data.profile.id}`}`,
      ]),
      el("p", { "data-why-summary": "", text: data.summary }),
      el("ul", { class: "why-nodes" }, data.nodes.map((node) => el("li", { class: node.held ? "ok" : "bad" }, [
        `${node.held ? "✓" : "✗"} `, el("code", { text: node.path }), ` ${node.description}`,
      ]))),
    );
  }

  // JSON mode for power users ------------------------------------------------------

  function parseTextarea() {
    try {
      return { ok: true, value: JSON.parse(textarea.value) };
    } catch (error) {
      return { ok: false, message: `This is not valid JSON: ${error.message}` };
    }
  }

  function showJson(show) {
    showingJson = show;
    jsonBox.hidden = !show;
    treeBox.hidden = show;
    jsonToggle.textContent = show ? "Structured editor" : "JSON";
    jsonToggle.setAttribute("aria-pressed", String(show));
    if (errors.length) setState(problemsState());
  }

  jsonToggle.addEventListener("click", () => {
    if (!showingJson) {
      textarea.value = JSON.stringify(rule, null, 2);
      showJson(true);
      return;
    }
    const parsed = parseTextarea();
    if (!parsed.ok || kindOf(parsed.value) === null) {
      jsonProblem.hidden = false;
      jsonProblem.textContent = parsed.ok ? "The rule must be an object such as {\"all\": []}." : parsed.message;
      return;
    }
    rule = parsed.value;
    showJson(false);
    render();
    schedulePreview();
  });

  textarea.addEventListener("input", () => {
    const parsed = parseTextarea();
    jsonProblem.hidden = parsed.ok;
    jsonProblem.textContent = parsed.ok ? "" : parsed.message;
    if (!parsed.ok) return;
    rule = parsed.value;
    schedulePreview();
  });

  form.addEventListener("submit", () => {
    if (!showingJson) textarea.value = JSON.stringify(rule, null, 2);
  });
  root.querySelector("[data-why]").addEventListener("submit", explain);

  // Start: the structured editor when the rule can be shown in it, else the JSON.
  const initial = parseTextarea();
  jsonToggle.hidden = false;
  if (initial.ok && kindOf(initial.value) !== null) {
    rule = initial.value;
    showJson(false);
    render();
    preview();
  } else {
    rule = initial.ok ? initial.value : null;
    showJson(true);
    jsonProblem.hidden = initial.ok;
    jsonProblem.textContent = initial.ok ? "" : initial.message;
    if (initial.ok) preview();
  }
})();
