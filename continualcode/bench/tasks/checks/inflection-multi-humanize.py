from inflection import humanize

for word, want in (("author_id", "Author"), ("paid", "Paid"), ("employee_salary", "Employee salary")):
    assert humanize(word) == want, f"humanize({word!r}) = {humanize(word)!r}"
