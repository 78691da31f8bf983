// The foot-drop timeline (/app/index.html). Reads the patient's record with the user's SMART
// token (fhirclient), posts it to the service's /app/api/evaluate, which runs the patient-view
// pathway on it and answers with the timeline and the current cards, and draws both.
// The service never reads FHIR for the app: it sees only what this page sends.
import FHIR from 'fhirclient';
import { axisBottom, axisLeft, scaleLinear, scaleUtc, select, symbol,
  symbolCircle, symbolDiamond, symbolSquare, symbolTriangle, line, utcParse } from 'd3';

const $ = (id) => document.getElementById(id);
const SYMBOLS = { circle: symbolCircle, square: symbolSquare, diamond: symbolDiamond, triangle: symbolTriangle };
const parseDay = utcParse('%Y-%m-%d');

function setStatus(text) { $('status').textContent = text; }

function fail(message) {
  $('status').hidden = true;
  $('problem').hidden = false;
  $('problem').textContent = message;
}

function authorisationMessage(error) {
  const text = String(error && error.message ? error.message : error);
  if (/access_denied|denied|refused|consent|interaction_required|login_required/i.test(text)) {
    return `Authorisation was refused, so the timeline cannot read this patient's record (${text}). `
      + 'Open it again from the card and allow access.';
  }
  return `The EHR's authorisation did not complete: ${text}. Open the timeline again from the card.`;
}

async function getJson(url, options) {
  const response = await fetch(url, options);
  let body;
  try { body = await response.json(); } catch { body = undefined; }
  if (!response.ok) {
    const issue = body && Array.isArray(body.issue) ? body.issue[0] : undefined;
    const why = issue && issue.diagnostics ? issue.diagnostics : `HTTP ${response.status}`;
    throw new Error(why);
  }
  return body;
}

function patientName(patient) {
  const name = (patient.name || [])[0];
  if (!name) return `Patient ${patient.id}`;
  if (name.text) return name.text;
  return [...(name.given || []), name.family].filter(Boolean).join(' ');
}

async function readRecord(client, patientId, queries) {
  const id = encodeURIComponent(patientId);
  const patient = await client.request(`Patient/${id}`);
  const results = await Promise.all(queries.map(async (q) => {
    try {
      return await client.request(q.query.replaceAll('{{context.patientId}}', id), { pageLimit: 0, flat: true });
    } catch (error) {
      if (!q.required) return [];
      throw new Error(`could not read ${q.query.split('?')[0]} from the FHIR server: ${error.message}`);
    }
  }));
  return [patient, ...results.flat().filter(Boolean)];
}

function everyDate(timeline) {
  const days = [timeline.asOf, timeline.footDrop.onset];
  for (const s of timeline.grades) for (const p of s.points) days.push(p.date);
  for (const m of [...timeline.redFlags, ...timeline.causes]) days.push(m.date);
  for (const lane of timeline.lanes) for (const e of lane.events) days.push(e.date);
  return days.filter(Boolean).map(parseDay);
}

function drawChart(timeline) {
  const lanes = timeline.lanes;
  const width = 1040;
  const margin = { top: 40, right: 30, bottom: 30, left: 230 };
  const gradeHeight = 260;
  const laneHeight = 34;
  const height = margin.top + gradeHeight + 40 + lanes.length * laneHeight + margin.bottom;
  const days = everyDate(timeline);
  const first = new Date(Math.min(...days) - 7 * 864e5);
  const last = new Date(Math.max(...days) + 7 * 864e5);
  const x = scaleUtc().domain([first, last]).range([margin.left, width - margin.right]);
  const y = scaleLinear().domain([0, 5]).range([margin.top + gradeHeight, margin.top]);

  const svg = select('#chart').append('svg')
    .attr('viewBox', `0 0 ${width} ${height}`)
    .attr('role', 'img')
    .attr('aria-labelledby', 'chart-title');
  svg.append('title').attr('id', 'chart-title')
    .text('Muscle grades (MRC 0-5) over time, with onset, red flags, causes and what was done; the table below lists every point');

  svg.append('g').attr('class', 'grid').selectAll('line').data([0, 1, 2, 3, 4, 5]).join('line')
    .attr('x1', margin.left).attr('x2', width - margin.right).attr('y1', (d) => y(d)).attr('y2', (d) => y(d));
  svg.append('g').attr('class', 'axis').attr('transform', `translate(${margin.left},0)`)
    .call(axisLeft(y).ticks(5).tickFormat((d) => `${d}/5`));
  svg.append('text').attr('x', 10).attr('y', margin.top + gradeHeight / 2).text('MRC grade');
  const axisY = height - margin.bottom;
  svg.append('g').attr('class', 'axis').attr('transform', `translate(0,${axisY})`).call(axisBottom(x).ticks(8));

  // Today, the onset, red flags and causes: vertical markers across the whole chart.
  const verticals = [
    { date: timeline.asOf, label: 'today', colour: '#444', dash: '2 3', kind: 'today' },
  ];
  if (timeline.footDrop.onset) verticals.push({ date: timeline.footDrop.onset, label: 'foot drop onset', colour: '#000', dash: '6 3', kind: 'onset' });
  for (const flag of timeline.redFlags) if (flag.date) verticals.push({ date: flag.date, label: `red flag: ${flag.name}`, colour: flag.colour, dash: '', kind: 'red-flag' });
  const marks = svg.append('g').attr('class', 'markers');
  verticals.forEach((v, i) => {
    const g = marks.append('g').attr('class', `marker ${v.kind}`);
    g.append('line').attr('x1', x(parseDay(v.date))).attr('x2', x(parseDay(v.date)))
      .attr('y1', margin.top - 6).attr('y2', axisY)
      .attr('stroke', v.colour).attr('stroke-width', v.kind === 'red-flag' ? 2 : 1)
      .attr('stroke-dasharray', v.dash || null);
    const nearRightEdge = x(parseDay(v.date)) > width - 260;
    g.append('text').attr('x', x(parseDay(v.date)) + (nearRightEdge ? -3 : 3)).attr('y', 12 + (i % 3) * 12)
      .attr('text-anchor', nearRightEdge ? 'end' : 'start')
      .attr('fill', v.colour).text(`${v.label} (${v.date})`);
    g.append('title').text(`${v.label}: ${v.date}`);
  });
  for (const cause of timeline.causes) {
    if (!cause.date) continue;
    const g = marks.append('g').attr('class', 'marker cause');
    g.append('path').attr('d', symbol(symbolTriangle, 60)())
      .attr('transform', `translate(${x(parseDay(cause.date))},${margin.top + gradeHeight + 16})`)
      .attr('fill', cause.colour);
    g.append('text').attr('x', x(parseDay(cause.date)) + 8).attr('y', margin.top + gradeHeight + 20)
      .attr('fill', cause.colour).text(`cause: ${cause.label}`);
    g.append('title').text(`cause: ${cause.label} (${cause.date})`);
  }

  // Grades: one line per muscle group and side, each point marked and labelled with its grade.
  const path = line().x((p) => x(parseDay(p.date))).y((p) => y(p.grade));
  for (const series of timeline.grades) {
    const g = svg.append('g').attr('class', 'series').attr('data-series', series.id);
    g.append('path').attr('d', path(series.points)).attr('fill', 'none')
      .attr('stroke', series.colour).attr('stroke-width', series.primary ? 2.5 : 1.2)
      .attr('stroke-dasharray', series.primary ? null : '5 3');
    const points = g.selectAll('g.point').data(series.points).join('g').attr('class', 'point')
      .attr('transform', (p) => `translate(${x(parseDay(p.date))},${y(p.grade)})`);
    points.append('path').attr('d', symbol(SYMBOLS[series.marker] || symbolCircle, series.primary ? 70 : 40)())
      .attr('fill', series.colour);
    points.append('text').attr('x', 6).attr('y', -6).attr('fill', series.colour).text((p) => p.recordedAs);
    points.append('title').text((p) => `${series.label}: ${p.recordedAs} on ${p.date}`);
  }

  // Lanes: what was ordered or done, on the same time axis.
  lanes.forEach((lane, i) => {
    const top = margin.top + gradeHeight + 40 + i * laneHeight;
    const g = svg.append('g').attr('class', 'lane').attr('data-lane', lane.id);
    g.append('line').attr('x1', margin.left).attr('x2', width - margin.right)
      .attr('y1', top + laneHeight / 2).attr('y2', top + laneHeight / 2).attr('stroke', '#ddd');
    g.append('text').attr('x', 10).attr('y', top + laneHeight / 2 + 4).text(lane.label);
    // Events of one day share a marker and a label (they would overprint each other).
    const byDay = new Map();
    for (const event of lane.events) {
      if (!event.date) continue;
      if (!byDay.has(event.date)) byDay.set(event.date, []);
      byDay.get(event.date).push(event);
    }
    for (const [day, events] of byDay) {
      const done = events.every((event) => event.status === 'done');
      const e = g.append('g').attr('class', 'event').attr('transform', `translate(${x(parseDay(day))},${top + laneHeight / 2})`);
      e.append('path').attr('d', symbol(done ? symbolSquare : symbolDiamond, 60)())
        .attr('fill', done ? lane.colour : '#fff').attr('stroke', lane.colour).attr('stroke-width', 1.5);
      const nearRightEdge = x(parseDay(day)) > width - 300;
      e.append('text').attr('x', nearRightEdge ? -8 : 8).attr('y', 4)
        .attr('text-anchor', nearRightEdge ? 'end' : 'start')
        .text(events.map((event) => event.label).join('; '));
      e.append('title').text(events.map((event) => event.description).join('\n'));
    }
  });

  const legend = $('legend');
  for (const series of timeline.grades) {
    const item = document.createElement('span');
    item.textContent = `${series.marker === 'circle' ? '●' : series.marker === 'square' ? '■' : series.marker === 'diamond' ? '◆' : '▲'} ${series.label}`;
    item.style.color = series.colour;
    legend.append(item);
  }
  const doneItem = document.createElement('span');
  doneItem.textContent = '■ done   ◇ ordered, not done yet';
  legend.append(doneItem);
}

function drawTable(timeline) {
  const rows = [];
  for (const s of timeline.grades) for (const p of s.points) rows.push([p.date, s.label, `${p.recordedAs} (MRC grade)`]);
  if (timeline.footDrop.onset) rows.push([timeline.footDrop.onset, 'Foot drop onset', timeline.footDrop.side]);
  for (const f of timeline.redFlags) rows.push([f.date || '', `Red flag: ${f.name}`, 'recent, active']);
  for (const c of timeline.causes) rows.push([c.date || '', `Cause: ${c.label}`, 'recorded']);
  for (const lane of timeline.lanes) for (const e of lane.events) rows.push([e.date || '', `${lane.label}: ${e.label}`, e.status + (e.priority ? `, priority ${e.priority}` : '')]);
  rows.sort((a, b) => (a[0] || '9999').localeCompare(b[0] || '9999'));
  const body = document.querySelector('#table tbody');
  for (const row of rows) {
    const tr = document.createElement('tr');
    for (const cell of row) {
      const td = document.createElement('td');
      td.textContent = cell || 'date not recorded';
      tr.append(td);
    }
    body.append(tr);
  }
}

function drawCards(cards) {
  const box = $('cards');
  if (!cards.length) {
    box.textContent = 'No recommendation for this patient today.';
    return;
  }
  for (const card of cards) {
    const div = document.createElement('article');
    div.className = `card ${card.indicator}`;
    const head = document.createElement('p');
    const indicator = document.createElement('span');
    indicator.className = 'indicator';
    indicator.textContent = card.indicator;
    const summary = document.createElement('strong');
    summary.className = 'card-summary';
    summary.textContent = card.summary;
    head.append(indicator, summary);
    const details = document.createElement('details');
    const why = document.createElement('summary');
    why.textContent = 'Why, and the evidence';
    const detail = document.createElement('div');
    detail.innerHTML = card.detailHtml; // rendered and sanitised by the service (nh3)
    details.append(why, detail);
    div.append(head, details);
    box.append(div);
  }
}

function describe(timeline) {
  const fd = timeline.footDrop;
  const parts = [`As of ${timeline.asOf}.`];
  if (fd.present) {
    parts.push(`Foot drop (${fd.side})${fd.onset ? ` since ${fd.onset}` : ''}; course: ${fd.course}.`);
  } else {
    parts.push('No active foot drop recorded.');
  }
  if (timeline.redFlags.length) parts.push(`Red flags: ${timeline.redFlags.map((f) => f.name).join(', ')}.`);
  if (timeline.causes.length) parts.push(`Causes found: ${timeline.causes.map((c) => c.label).join(', ')}.`);
  return parts.join(' ');
}

async function main() {
  let client;
  try {
    client = await FHIR.oauth2.ready();
  } catch (error) {
    fail(authorisationMessage(error));
    return;
  }
  const patientId = client.patient.id;
  if (!patientId) {
    fail('No patient in context: the EHR gave the timeline no patient (the token has no "patient"). '
      + "Open the timeline from a card on the patient's chart, or launch it with patient selection.");
    return;
  }
  try {
    const config = await getJson('api/config');
    const resources = await readRecord(client, patientId, config.queries);
    $('patient').textContent = patientName(resources[0]);
    setStatus('Evaluating the foot-drop pathway…');
    const result = await getJson('api/evaluate', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ patientId, resources }),
    });
    $('summary').textContent = describe(result.timeline);
    $('content').hidden = false;
    drawChart(result.timeline);
    drawTable(result.timeline);
    drawCards(result.cards);
    $('status').textContent = 'Ready.';
    document.body.dataset.ready = 'true';
  } catch (error) {
    fail(`The timeline could not be shown: ${error.message}`);
  }
}

main();
