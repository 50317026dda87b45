# A Python function: main(request) returns a str, bytes, a dict (sent as JSON)
# or (body, status, headers).


def main(request):
    return {"message": "Hello from Python", "method": request.method}
