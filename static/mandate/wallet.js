/* "Sign in with Ethereum" and "Link wallet" (templates/account/snippets/wallet_button.html).
   Asks the browser's wallet (EIP-1193, window.ethereum) for its account and chain, builds the
   EIP-4361 message exactly as governance/siwe.py parses it, has the wallet sign it
   (personal_sign, EIP-191) and posts it; then follows the answer. Unlink buttons post too.
   docs/wallets.md, "Signing in to the console with a wallet". */
(function () {
  "use strict";
  if (window.mandateWallet) return;

  var NO_WALLET = "No Ethereum wallet found in this browser. Install a wallet extension, or sign in another way.";

  // An error whose message is already for people (the others come from the wallet).
  function problem(text) {
    var error = new Error(text);
    error.plain = true;
    return error;
  }

  function hexOf(text) {
    var bytes = new TextEncoder().encode(text);
    var out = "0x";
    for (var i = 0; i < bytes.length; i++) out += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    return out;
  }

  // The EIP-4361 text: no scheme, a statement, no optional fields (the nonce expires anyway).
  function siweMessage(fields) {
    return fields.domain + " wants you to sign in with your Ethereum account:\n" +
      fields.address + "\n\n" +
      fields.statement + "\n\n" +
      "URI: " + fields.uri + "\n" +
      "Version: 1\n" +
      "Chain ID: " + fields.chainId + "\n" +
      "Nonce: " + fields.nonce + "\n" +
      "Issued At: " + fields.issuedAt;
  }

  function walletErrorText(error) {
    if (error && error.code === 4001) return "You declined the request in your wallet.";
    if (error && error.code === -32002) return "Your wallet already has a request open: finish or dismiss it there.";
    return "Your wallet could not do it: " + ((error && error.message) || error);
  }

  function csrfToken(box) {
    var input = box.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function reach(url, options) {
    return fetch(url, options).catch(function () { throw problem("Mandate could not be reached; try again."); });
  }

  function postJSON(url, token, body) {
    return reach(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": token },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (answer) {
        if (!response.ok) {
          throw problem(answer.message || answer.error || ("The server answered " + response.status + "."));
        }
        return answer;
      });
    });
  }

  function say(box, text, isError) {
    var status = box.querySelector(".wallet-status");
    status.hidden = !text;
    status.textContent = text || "";
    status.classList.toggle("wallet-error", !!isError);
  }

  function signAndPost(box) {
    var provider = window.ethereum;
    if (!provider || typeof provider.request !== "function") {
      return Promise.reject(problem(NO_WALLET));
    }
    var allowed = (box.dataset.chainIds || "").split(",").filter(Boolean).map(Number);
    var address, chainId, message;
    say(box, "Waiting for your wallet…");
    return provider.request({ method: "eth_requestAccounts" }).then(function (accounts) {
      if (!accounts || !accounts.length) throw problem("Your wallet shared no account.");
      address = accounts[0];
      return provider.request({ method: "eth_chainId" });
    }).then(function (hexChainId) {
      chainId = parseInt(hexChainId, 16);
      if (allowed.length && allowed.indexOf(chainId) < 0) {
        throw problem("Your wallet is on chain " + chainId + "; Mandate accepts chain " +
          allowed.join(" or ") + ". Switch networks in your wallet and try again.");
      }
      return reach(box.dataset.nonceUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } });
    }).then(function (response) {
      if (!response.ok) throw problem("Could not get a sign-in nonce (" + response.status + ").");
      return response.json();
    }).then(function (issued) {
      message = siweMessage({
        domain: location.host,
        address: address,
        statement: box.dataset.statement,
        uri: location.origin + box.dataset.uriPath,
        chainId: chainId,
        nonce: issued.nonce,
        issuedAt: new Date().toISOString(),
      });
      say(box, "Sign the message in your wallet…");
      return provider.request({ method: "personal_sign", params: [hexOf(message), address] });
    }).then(function (signature) {
      say(box, "Checking the signature…");
      var body = { message: message, signature: signature };
      if (box.dataset.walletAction === "login") body.next = box.dataset.next || "";
      return postJSON(box.dataset.postUrl, csrfToken(box), body);
    });
  }

  function run(box, button) {
    button.disabled = true;
    signAndPost(box).then(function (answer) {
      if (box.dataset.walletAction === "login") {
        say(box, "Signed in as " + answer.username + ".");
        window.location.assign(answer.redirect);
      } else {
        say(box, "Linked " + answer.wallet + ".");
        window.location.reload();
      }
    }).catch(function (error) {
      say(box, error.plain ? error.message : walletErrorText(error), true);
      button.disabled = false;
    });
  }

  function unlink(button) {
    var box = button.closest("[data-unlink-url]");
    button.disabled = true;
    postJSON(box.dataset.unlinkUrl, csrfToken(box), { wallet: button.dataset.wallet }).then(function () {
      window.location.reload();
    }).catch(function (error) {
      say(box, error.message, true);
      button.disabled = false;
    });
  }

  function wire() {
    document.querySelectorAll("[data-wallet-action]").forEach(function (box) {
      var button = box.querySelector(".wallet-button");
      button.addEventListener("click", function () { run(box, button); });
    });
    document.querySelectorAll("[data-unlink-url] button[data-wallet]").forEach(function (button) {
      button.addEventListener("click", function () { unlink(button); });
    });
  }

  window.mandateWallet = { siweMessage: siweMessage };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
})();
