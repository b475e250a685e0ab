/* What the score card's About view shows for this org. `python -m solution.package --from-app URL` writes
   it from the function app (each published model's grade ranges and topAttributes); these are the
   documented defaults. */
window.POS_ABOUT = {
  "format": 1,
  "gradeRanges": {"A": {"min": 75, "max": 100}, "B": {"min": 50, "max": 74}, "C": {"min": 25, "max": 49}, "D": {"min": 0, "max": 24}},
  "models": {}
};
