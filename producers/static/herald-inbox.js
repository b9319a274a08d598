// <herald-inbox data-user="…" data-token="…">: herald's in-app feed, no build step.
// The server renders the feed; this adds live arrivals (Server-Sent Events), the unread
// badge, "seen" for what was shown and "read" on click. The token is a short-lived user
// token minted by the app's backend (POST /v1/users/{id}/feed/token).
(function () {
  "use strict";

  class HeraldInbox extends HTMLElement {
    connectedCallback() {
      this.user = this.dataset.user;
      this.token = this.dataset.token;
      this.base = "/v1/users/" + encodeURIComponent(this.user) + "/feed";
      this.list = this.querySelector("#feed");
      this.badge = this.querySelector("#unread-badge");
      this.list.addEventListener("click", (ev) => {
        const li = ev.target.closest("li[data-item-id]");
        if (li && li.classList.contains("unread")) this.markRead(li);
      });
      this.post("seen", this.unseenIds());
      this.listen();
    }

    disconnectedCallback() {
      if (this.source) this.source.close();
    }

    unseenIds() {
      return Array.from(this.list.querySelectorAll("li[data-item-id]"), (li) => li.dataset.itemId);
    }

    post(action, ids) {
      if (!ids.length) return Promise.resolve(null);
      return fetch(this.base + "/" + action, {
        method: "POST",
        headers: { "Authorization": "Bearer " + this.token, "Content-Type": "application/json" },
        body: JSON.stringify({ item_ids: ids }),
      }).then((r) => (r.ok ? r.json() : null)).then((body) => {
        if (body && body.counts) this.setBadge(body.counts.unread);
        return body;
      });
    }

    markRead(li) {
      li.classList.remove("unread");
      li.classList.add("read");
      this.post("read", [li.dataset.itemId]);
    }

    setBadge(n) {
      this.badge.textContent = String(n);
      this.badge.dataset.count = String(n);
    }

    render(item) {
      const li = document.createElement("li");
      li.className = "item " + (item.read ? "read" : "unread");
      li.dataset.itemId = item.item_id;
      if (item.title) {
        const strong = document.createElement("strong");
        strong.textContent = item.title;
        li.append(strong, " ");
      }
      const body = document.createElement("span");
      body.className = "body";
      body.textContent = item.body;
      const time = document.createElement("time");
      time.dateTime = item.created_at;
      time.textContent = item.created_at.replace("T", " ").slice(0, 16);
      li.append(body, " ", time);
      return li;
    }

    listen() {
      const url = this.base + "/stream?token=" + encodeURIComponent(this.token);
      this.source = new EventSource(url);
      this.source.addEventListener("item", (ev) => {
        const item = JSON.parse(ev.data);
        if (this.list.querySelector('li[data-item-id="' + CSS.escape(item.item_id) + '"]')) return;
        const empty = this.querySelector(".empty");
        if (empty) empty.remove();
        this.list.prepend(this.render(item));
        this.post("seen", [item.item_id]);
      });
      this.source.addEventListener("counts", (ev) => this.setBadge(JSON.parse(ev.data).unread));
      this.source.addEventListener("expired", () => this.source.close());
    }
  }

  customElements.define("herald-inbox", HeraldInbox);
})();
