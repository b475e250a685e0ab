/* Form library of the opportunity form: hands the score card web resource the client API.
   Register PosScoreCard.onLoad on the form's OnLoad and PosScoreCard.onTabStateChange on the TabStateChange
   of the tab holding the card (both "pass execution context as first parameter"). */
var PosScoreCard = window.PosScoreCard || {};
(function (ns) {
  "use strict";
  ns.CONTROL = "WebResource_pos_scorecard";

  function hand(executionContext) {
    var formContext = executionContext.getFormContext();
    var control = formContext.getControl(ns.CONTROL);
    if (!control || typeof control.getContentWindow !== "function") return Promise.resolve(false);
    return control.getContentWindow().then(function (contentWindow) {
      if (contentWindow && typeof contentWindow.setClientApiContext === "function") {
        return Promise.resolve(contentWindow.setClientApiContext(Xrm, formContext)).then(function () { return true; });
      }
      return false;
    });
  }

  ns.onLoad = function (executionContext) { return hand(executionContext); };
  // Dataverse reloads a web resource whose tab is collapsed and expanded again: hand it the API again.
  ns.onTabStateChange = function (executionContext) { return hand(executionContext); };
})(PosScoreCard);
