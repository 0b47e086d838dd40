// tidings comet client: see web/chat.html
