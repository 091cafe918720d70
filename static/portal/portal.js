// Behaviour every page shares. Here and not in on* attributes: the Content-Security-Policy
// allows scripts from this site's files only.

// <select data-submit-on-change> submits its form as soon as a choice is made (the language menu).
document.addEventListener("change", (event) => {
  const select = event.target.closest?.("select[data-submit-on-change]");
  if (select?.form) select.form.submit();
});
