// Readers of the chat demo page (web/chat.html) for tests/browser_demo.rs, run after
// prelude.js.

/** The chat lines of the page, oldest first. */
function chatLines() {
  return Array.from(document.querySelectorAll('#log .msg')).map((li) => ({
    from: li.querySelector('.from').textContent,
    text: li.querySelector('.text').textContent,
    time: Number(li.dataset.time),
    foreign: li.classList.contains('foreign'),
    mine: li.classList.contains('mine'),
  }));
}
