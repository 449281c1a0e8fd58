// warden's status page: reads /status-page/events (Server-Sent Events) and
// renders it. Plain DOM, no framework; text only through textContent.
'use strict';
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var errors = [];
  function recordError(message) {
    errors.push(String(message));
    var box = $('errors');
    box.textContent = 'Page errors:\n' + errors.join('\n');
    box.hidden = false;
  }
  window.addEventListener('error', function (e) { recordError(e.message); });
  window.addEventListener('unhandledrejection', function (e) { recordError(e.reason); });

  var TAIL_MAX = 50;
  var CHARTS = [['cpu_percent', 'CPU %'], ['memory_mb', 'Memory MB'], ['file_descriptors', 'Open fds'],
    ['clients_connected', 'Clients'], ['event_rate', 'Events/s']];
  var es = null, lostAt = null, lastMessage = 0, interval = 30, paused = false, held = [];

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function badge(status) { return el('span', status || 'unknown', 'st s-' + (status || 'unknown')); }
  function clock(d) { return d.toLocaleTimeString([], { hour12: false }); }
  function fmt(v) { return typeof v === 'number' ? (Math.round(v * 100) / 100).toString() : String(v); }
  function duration(s) {
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's';
  }
  function facts(id, rows) {
    var dl = $(id);
    dl.replaceChildren();
    rows.forEach(function (r) {
      dl.appendChild(el('dt', r[0]));
      var dd = el('dd');
      if (r[1] instanceof Node) dd.appendChild(r[1]); else dd.textContent = r[1] === null || r[1] === undefined ? '-' : String(r[1]);
      dl.appendChild(dd);
    });
  }
  function rows(id, list, cells) {
    var body = $(id).tBodies[0];
    body.replaceChildren();
    list.forEach(function (item) {
      var tr = el('tr');
      cells(item).forEach(function (c) {
        var td = el('td');
        if (c instanceof Node) td.appendChild(c); else td.textContent = c;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function render(snap) {
    var info = snap.server_info, report = snap.latest_report, rec = snap.recovery_manager;
    var overall = report ? report.overall_status : snap.health_monitor.overall_status;
    var o = $('overall');
    o.textContent = overall;
    o.className = 'st s-' + overall;
    document.title = 'warden: ' + overall;
    interval = snap.health_monitor.check_interval_seconds || interval;

    var ready = snap.ready.ready ? 'ready' : 'not ready: ' + snap.ready.reasons.join(', ');
    facts('facts', [['Uptime', duration(info.uptime_seconds)], ['Version', info.version], ['PID', info.pid],
      ['Address', info.host + ':' + info.port], ['Live', 'live'], ['Ready', ready],
      ['Restarts', info.restarts], ['Last check', snap.health_monitor.last_check],
      ['Checks', snap.health_monitor.checks_performed + ' (' + snap.health_monitor.checks_failed + ' failed)']]);

    rows('checks', report ? report.results : [], function (r) {
      var ul = el('ul');
      r.metrics.forEach(function (m) {
        if (m.value === null || m.value === undefined) return;
        var text = m.name + ': ' + fmt(m.value) + (m.unit ? ' ' + m.unit : '');
        if (m.threshold !== null && m.threshold !== undefined) text += ' / ' + fmt(m.threshold);
        if (m.status !== 'healthy') text += ' (' + m.status + ')';
        ul.appendChild(el('li', text, m.status === 'healthy' ? '' : 'bad'));
      });
      if (r.error) ul.appendChild(el('li', 'error: ' + r.error, 'bad'));
      return [r.checker, badge(r.status), ul];
    });

    renderHistory(snap.history || [], report);
    renderRecovery(rec);
    var st = snap.service_stats;
    facts('counts', [['Clients connected', st.clients_connected], ['Events processed', st.events_processed],
      ['Events relayed', st.events_relayed], ['Events dropped', st.events_dropped], ['Errors', st.errors],
      ['Last activity', st.last_activity]]);
    renderCluster(snap.cluster);
  }

  function renderHistory(history, report) {
    var strips = $('strips');
    strips.replaceChildren();
    var names = ['overall'];
    history.forEach(function (h) { Object.keys(h.c).forEach(function (n) { if (names.indexOf(n) < 0) names.push(n); }); });
    names.forEach(function (name) {
      var counts = {}, strip = el('div', null, 'strip');
      history.forEach(function (h) {
        var s = name === 'overall' ? h.s : (h.c[name] || 'unknown');
        counts[s] = (counts[s] || 0) + 1;
        var cell = el('span', null, 's-' + s);
        cell.title = h.t + ': ' + s;
        strip.appendChild(cell);
      });
      var summary = Object.keys(counts).map(function (k) { return counts[k] + ' ' + k; }).join(', ');
      strips.appendChild(el('div', name + ' (last ' + history.length + ' checks): ' + (summary || 'none yet')));
      strips.appendChild(strip);
    });
    var limits = {};
    (report ? report.results : []).forEach(function (r) {
      r.metrics.forEach(function (m) { if (typeof m.threshold === 'number') limits[m.name] = m.threshold; });
    });
    var charts = $('charts');
    charts.replaceChildren();
    CHARTS.forEach(function (c) {
      var values = history.map(function (h) { return h.m[c[0]]; }).filter(function (v) { return typeof v === 'number'; });
      var fig = el('figure');
      var last = values.length ? fmt(values[values.length - 1]) : '-';
      fig.appendChild(el('figcaption', c[1] + ': ' + last + (c[0] in limits ? ' (limit ' + fmt(limits[c[0]]) + ')' : '')));
      fig.appendChild(chart(values, limits[c[0]]));
      charts.appendChild(fig);
    });
  }

  function chart(values, limit) {
    var NS = 'http://www.w3.org/2000/svg', W = 100, H = 40;
    var svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    var max = Math.max.apply(null, values.concat([1e-9]));
    if (typeof limit === 'number' && limit <= max * 2) max = Math.max(max, limit);
    var y = function (v) { return (H - 2 - (v / max) * (H - 4)).toFixed(2); };
    if (values.length) {
      var step = values.length > 1 ? W / (values.length - 1) : 0;
      var line = document.createElementNS(NS, 'polyline');
      line.setAttribute('points', values.map(function (v, i) { return (i * step).toFixed(2) + ',' + y(v); }).join(' '));
      line.setAttribute('fill', 'none');
      line.setAttribute('stroke', '#1a5fb4');
      line.setAttribute('stroke-width', '1.5');
      line.setAttribute('vector-effect', 'non-scaling-stroke');
      svg.appendChild(line);
    }
    if (typeof limit === 'number' && limit <= max) {
      var l = document.createElementNS(NS, 'line');
      l.setAttribute('x1', 0); l.setAttribute('x2', W); l.setAttribute('y1', y(limit)); l.setAttribute('y2', y(limit));
      l.setAttribute('stroke', '#b3261e'); l.setAttribute('stroke-dasharray', '3 2');
      l.setAttribute('vector-effect', 'non-scaling-stroke');
      svg.appendChild(l);
    }
    return svg;
  }

  function renderRecovery(rec) {
    var b = rec.circuit_breaker, s = rec.strategy;
    var breaker = b.state + ' (failures ' + b.consecutive_failures + ', trips ' + b.trip_count +
      ', half-open successes ' + b.half_open_successes + ', trials ' + b.trials_in_flight + ')';
    facts('ladder', [['Recovery', rec.enabled ? 'on' : 'off'], ['Rung', s.rung + (s.latched ? ' (latched)' : '')],
      ['In window', s.criticals_in_window + ' critical, ' + s.warnings_in_window + ' warning'],
      ['Last action', s.last_action], ['Breaker', breaker],
      ['Next half-open trial', b.reopens_at || (b.state === 'closed' ? 'n/a (closed)' : '-')],
      ['Recoveries', rec.total_recoveries + ' (' + rec.successful_recoveries + ' ok, ' + rec.failed_recoveries +
        ' failed, ' + rec.rejected_by_breaker + ' blocked)']]);
    rows('recoveries', rec.recent_events.slice().reverse(), function (e) {
      var result = e.success ? 'succeeded' : 'failed' + (e.error_message ? ': ' + e.error_message : '');
      return [e.timestamp_iso, e.action, badge(e.health_status), el('span', result, e.success ? '' : 'bad'), fmt(e.duration_ms)];
    });
  }

  function renderCluster(cluster) {
    $('cluster').hidden = !cluster.enabled;
    if (!cluster.enabled) return;
    var c = cluster.state;
    facts('clusterfacts', [['Node', c.node_id], ['Redis', c.redis_state + (c.redis_state_since ? ' since ' + c.redis_state_since : '')],
      ['Round trip', c.redis_rtt_ms === null ? '-' : fmt(c.redis_rtt_ms) + ' ms'],
      ['Peers seen', c.peers_seen.length ? c.peers_seen.join(', ') : 'none'], ['Local fallbacks', c.local_fallbacks],
      ['Last error', c.last_error]]);
  }

  function addTail(event) {
    var tail = $('tail');
    var type = event.type || event.event || event.hook_event_name || '(no type)';
    var text = JSON.stringify(event, null, 2);
    var li = el('li'), details = el('details'), summary = el('summary');
    summary.textContent = (event.received_at || '') + ' ' + type + ' (' + new Blob([JSON.stringify(event)]).size + ' B)';
    details.appendChild(summary);
    details.addEventListener('toggle', function () {
      if (details.open && !details.querySelector('pre')) details.appendChild(el('pre', text));
    });
    li.appendChild(details);
    tail.insertBefore(li, tail.firstChild);
    while (tail.children.length > TAIL_MAX) tail.removeChild(tail.lastChild);
  }

  $('pause').addEventListener('click', function () {
    paused = !paused;
    this.textContent = paused ? 'Resume' : 'Pause';
    this.setAttribute('aria-pressed', String(paused));
    if (!paused) { held.forEach(addTail); held = []; }
    $('tailnote').textContent = paused ? 'paused' : '';
  });

  function setConn(text, cls) { var c = $('conn'); c.textContent = text; c.className = 'conn ' + (cls || ''); }
  function lost() {
    if (lostAt === null) lostAt = Date.now();
    setConn('Connection lost at ' + clock(new Date(lostAt)) + '; reconnecting...', 'lost');
  }
  function connect() {
    // With server.auth_token, open the page as /?token=... : the stream
    // needs it, and an EventSource cannot send a header.
    var token = new URLSearchParams(location.search).get('token');
    es = new EventSource('/status-page/events' + (token ? '?token=' + encodeURIComponent(token) : ''));
    es.onopen = function () {
      lastMessage = Date.now();
      if (lostAt !== null) setConn('Reconnected at ' + clock(new Date()) + ' (lost at ' + clock(new Date(lostAt)) + ')', 'back');
      else setConn('Live', '');
      lostAt = null;
      $('banner').hidden = true;
    };
    es.addEventListener('snapshot', function (e) { lastMessage = Date.now(); render(JSON.parse(e.data)); });
    es.addEventListener('claude_event', function (e) {
      lastMessage = Date.now();
      var event = JSON.parse(e.data);
      if (paused) { held.push(event); if (held.length > TAIL_MAX) held.shift(); } else addTail(event);
    });
    es.addEventListener('lagged', function (e) {
      $('tailnote').textContent = 'fell ' + e.data + ' events behind; reconnecting (events in between are not shown)';
    });
    es.onerror = function () {
      es.close();
      lost();
      setTimeout(connect, 1000);
    };
  }
  setInterval(function () {
    var now = Date.now();
    if (lostAt !== null && now - lostAt > 3000) {
      var b = $('banner');
      b.textContent = 'Daemon unreachable: no answer from ' + location.host + ' since ' + clock(new Date(lostAt)) + '. Retrying every second.';
      b.hidden = false;
    }
    if (lostAt === null && es && now - lastMessage > Math.max(3 * interval, 10) * 1000) {
      es.close();
      lost();
      connect();
    }
  }, 1000);
  connect();
})();
