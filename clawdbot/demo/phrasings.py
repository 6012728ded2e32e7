"""Many ways customers say the same thing, in Chinese and English, per intent.

`{order}` and `{product}` are filled in by the dialogue builder. The evaluation set
(`eval.jsonl`) uses phrasings that are not in these lists.
"""

from __future__ import annotations

ORDER_STATUS = {
    "zh": [
        "我的订单{order}到哪了？",
        "帮我查一下订单{order}",
        "订单{order}现在什么状态？",
        "{order}这个订单发货了吗",
        "请问{order}什么时候能到？",
        "查询订单{order}",
        "我买的东西怎么还没到，订单号{order}",
        "{order}物流到哪里了",
        "你好，订单号是{order}，麻烦看下进度",
        "订单{order}怎么样了",
        "{order} 发货没有啊？",
        "能帮我看看{order}的物流信息吗",
        "我想知道订单{order}的情况",
        "{order}",
        "订单 {order} 到哪一步了？",
        "亲，{order}这单到哪了",
    ],
    "en": [
        "Where is my order {order}?",
        "Can you check order {order} for me?",
        "What's the status of {order}?",
        "Has order {order} shipped yet?",
        "When will {order} arrive?",
        "Track order {order} please",
        "My package hasn't arrived, the order number is {order}",
        "Any update on {order}?",
        "Order {order} status?",
        "Hi, could you look up {order}?",
        "{order}",
        "I'd like to know where order {order} is",
        "Is {order} on its way?",
        "Please check my order {order}",
        "What happened to my order {order}?",
        "Hello, tracking for {order}?",
    ],
}
ORDER_NO_NUMBER = {
    "zh": [
        "我的订单到哪了？",
        "帮我查一下订单",
        "我想查物流",
        "快递怎么还没到",
        "查一下我的订单状态",
        "我买的东西什么时候到",
    ],
    "en": [
        "Where is my order?",
        "Can you check my order?",
        "I want to track my package",
        "My parcel hasn't arrived",
        "What's the status of my order?",
        "When will my stuff arrive?",
    ],
}
PRODUCT_PRICE = {
    "zh": [
        "{product}多少钱？",
        "{product}现在什么价格",
        "请问{product}的售价是多少",
        "{product}贵吗，多少钱",
        "{product}卖多少",
    ],
    "en": [
        "How much is the {product}?",
        "What's the price of the {product}?",
        "How much does the {product} cost?",
        "Price of {product}?",
        "Is the {product} expensive? How much?",
    ],
}
PRODUCT_COLOURS = {
    "zh": ["{product}有哪些颜色？", "{product}有几种颜色可选", "{product}都有什么颜色"],
    "en": [
        "What colours does the {product} come in?",
        "Which colors are available for the {product}?",
        "{product} colours?",
    ],
}
PRODUCT_STOCK = {
    "zh": ["{product}有货吗？", "{product}还有库存吗", "现在能买到{product}吗"],
    "en": [
        "Is the {product} in stock?",
        "Do you have the {product} available?",
        "Can I buy the {product} now?",
    ],
}
PRODUCT_WARRANTY = {
    "zh": ["{product}保修多久？", "{product}的质保期是多长", "买{product}有保修吗"],
    "en": [
        "How long is the warranty on the {product}?",
        "Does the {product} come with a warranty?",
        "{product} warranty?",
    ],
}
FAQ_PREFIXES = {
    "zh": ["", "", "请问", "你好，", "您好，想问一下，", "亲，", "麻烦问下，"],
    "en": ["", "", "Hi, ", "Hello! ", "Quick question: ", "Excuse me, ", "Could you tell me: "],
}
GREETING = {
    "zh": ["你好", "您好", "在吗", "有人吗", "早上好", "晚上好", "嗨", "你好呀"],
    "en": ["Hello", "Hi", "Hi there", "Good morning", "Hey", "Anyone there?", "Good evening", "Hello!"],
}
THANKS = {
    "zh": ["谢谢", "好的，谢谢你", "明白了，多谢", "感谢！", "好的没问题了"],
    "en": ["Thanks", "Thank you!", "Great, thanks", "Got it, thank you", "That's all, thanks"],
}
COMPLAINT = {
    "zh": [
        "你们的服务太差了",
        "我要投诉，东西坏了没人管",
        "太失望了，等了这么久",
        "质量太差了，我很生气",
        "客服一直不回复，我要投诉",
    ],
    "en": [
        "Your service is terrible",
        "I want to file a complaint, nobody helps me",
        "I'm very disappointed with this order",
        "The quality is awful and I'm angry",
        "This is unacceptable, I want to complain",
    ],
}
OUT_OF_SCOPE = {
    "zh": [
        "明天北京天气怎么样",
        "帮我写一首诗",
        "今天股市怎么样",
        "你能帮我写代码吗",
        "推荐一部电影",
        "1加1等于几",
        "你是谁开发的",
    ],
    "en": [
        "What's the weather tomorrow?",
        "Write me a poem",
        "How are the stock markets today?",
        "Can you write some code for me?",
        "Recommend a movie",
        "What is the capital of France?",
        "Tell me a joke",
    ],
}
